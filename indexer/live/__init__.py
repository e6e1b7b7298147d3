"""The living library: the folder watcher, the library service that keeps the index equal to the disk,
model switches in the background, and the doctor."""
