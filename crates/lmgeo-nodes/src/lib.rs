//! lmgeo-nodes
