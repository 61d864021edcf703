"""The hetplace.io/v1alpha1 API: pydantic models, manifest loading, errors and CRD generation."""
