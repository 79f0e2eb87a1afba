"""langneurons.analysis."""
