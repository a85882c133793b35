"""Date and time formats that replace the locale's across the admin (one format on every page)."""
