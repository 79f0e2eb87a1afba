"""langneurons.reports."""
