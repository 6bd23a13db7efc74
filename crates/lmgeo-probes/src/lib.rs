//! lmgeo-probes
