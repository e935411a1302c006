//! DmemQuota API (placeholder while the Foundation lands).
