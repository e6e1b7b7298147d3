"""Getting photos in: scanning folders, decoding in worker processes, thumbnails, the indexing pipeline."""
