"""The REST API (FastAPI). Never imports torch: specs are validated and costed torch-free."""
