//! lmgeo-report
