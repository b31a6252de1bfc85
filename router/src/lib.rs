//! Switchyard's intent router: classifies a query into a route (`simple`, `rag`, `tool`).
//!
//! Empty until the trained classifier lands (issue 4); the crate exists so the dependency
//! map (server → router) is in place from the start.
