//! lmgeo-tables
