//! git_http: to be written.
