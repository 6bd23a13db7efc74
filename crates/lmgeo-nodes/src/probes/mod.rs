//! Node kinds that wrap the numerics of `lmgeo-probes`.

pub mod entropy;
pub mod geometry;
pub mod info_gain;
pub mod lasso_attention;
pub mod layer_similarity;
pub mod pooled;
pub mod scaling;
pub mod sentence_distance;

pub fn register(registry: &mut lmgeo_dag::Registry) {
    registry
        .register(entropy::Entropy)
        .register(geometry::Geometry)
        .register(layer_similarity::LayerSimilarity)
        .register(info_gain::InfoGain)
        .register(lasso_attention::LassoAttention)
        .register(sentence_distance::SentenceDistance)
        .register(scaling::PowerLaw)
        .register(scaling::DiffErank)
        .register(scaling::SimulateScaling);
}
