//! lmgeo-cli
