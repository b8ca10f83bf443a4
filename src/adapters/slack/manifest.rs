//! `dualkey slack manifest`: a Slack app manifest for this config (placeholder).
