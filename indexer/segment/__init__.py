"""Click-to-segment: SAM/MobileSAM segmenters, object and region search."""
