"""Persistence shared by the API and the worker: settings, database models and sessions, blobs.

Nothing here imports torch: the API depends on it.
"""
