"""The web application: pages, JSON API, storage, uploads and background jobs."""
