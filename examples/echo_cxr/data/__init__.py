"""ECHO data side: real data-set readers, curation pipeline, synthetic CXR generator, processor."""
