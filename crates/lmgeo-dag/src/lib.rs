//! lmgeo-dag
