"""Provider adapters, one module each behind `base.ImageProvider`; `registry` builds them from settings."""
