"""mammodecomp."""
