"""Tags: vocabulary files, the tag model, zero-shot tagging, teaching by example, XMP export."""
