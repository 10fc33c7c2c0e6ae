"""lifecycle module fixture."""
