//! lmgeo-data
