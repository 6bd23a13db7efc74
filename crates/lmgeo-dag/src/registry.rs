//! The table of node kinds an experiment may use.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::node::{Node, NodeKind, Typed};

/// Node kinds by name. Built-in kinds and plugins register the same way.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<String, Arc<dyn NodeKind>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a typed node kind. A later registration under the same name
    /// replaces the earlier one, so a plugin crate can override a built-in.
    pub fn register<N: Node>(&mut self, node: N) -> &mut Self {
        self.register_dyn(Arc::new(Typed(node)))
    }

    pub fn register_dyn(&mut self, kind: Arc<dyn NodeKind>) -> &mut Self {
        self.kinds.insert(kind.name().to_string(), kind);
        self
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn NodeKind>> {
        self.kinds.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> + Clone {
        self.kinds.keys().map(String::as_str)
    }

    pub fn kinds(&self) -> impl Iterator<Item = &Arc<dyn NodeKind>> {
        self.kinds.values()
    }
}
