"""Report renderers: pure functions from a JobReport (or job rows) to text, JSON, CSV or HTML."""
