//! Experiment values that remember where they came from.
//!
//! Every value in an experiment carries its origin (the file and byte span, an
//! environment variable, a `--set` argument, a sweep) so that any later error,
//! even one raised deep inside a node kind's parameter parsing, can point the
//! user at the exact place to fix.

use std::fmt;
use std::ops::Range;

use indexmap::IndexMap;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use toml::de::{DeTable, DeValue};

/// Byte range in the experiment file.
pub type Span = Range<usize>;

/// Where a value was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The experiment file, at a byte span.
    File(Span),
    /// An `LMGEO_*` environment variable.
    Env(String),
    /// A `--set` argument on the command line.
    CommandLine(String),
    /// Put there by lmgeo itself (a sweep value, a kind default), described.
    Generated(String),
}

impl Origin {
    pub fn span(&self) -> Option<Span> {
        match self {
            Origin::File(span) => Some(span.clone()),
            _ => None,
        }
    }
}

/// A scalar that can be a sweep coordinate: it names node instances and
/// becomes a column of the result tables.
#[derive(Clone, Debug)]
pub enum Scalar {
    String(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl PartialEq for Scalar {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Scalar::String(a), Scalar::String(b)) => a == b,
            (Scalar::Integer(a), Scalar::Integer(b)) => a == b,
            // Bit equality keeps `Eq`/`Hash` lawful; sweep values are literals.
            (Scalar::Float(a), Scalar::Float(b)) => a.to_bits() == b.to_bits(),
            (Scalar::Bool(a), Scalar::Bool(b)) => a == b,
            _ => false,
        }
    }
}
impl Eq for Scalar {}

impl std::hash::Hash for Scalar {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            Scalar::String(s) => s.hash(state),
            Scalar::Integer(i) => i.hash(state),
            Scalar::Float(f) => f.to_bits().hash(state),
            Scalar::Bool(b) => b.hash(state),
        }
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::String(s) => f.write_str(s),
            Scalar::Integer(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl Scalar {
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Scalar::String(s) => serde_json::Value::String(s.clone()),
            Scalar::Integer(i) => serde_json::Value::from(*i),
            Scalar::Float(x) => serde_json::Number::from_f64(*x)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Scalar::Bool(b) => serde_json::Value::Bool(*b),
        }
    }

    pub fn from_json(value: &serde_json::Value) -> Option<Scalar> {
        match value {
            serde_json::Value::String(s) => Some(Scalar::String(s.clone())),
            serde_json::Value::Bool(b) => Some(Scalar::Bool(*b)),
            serde_json::Value::Number(n) => n
                .as_i64()
                .map(Scalar::Integer)
                .or_else(|| n.as_f64().map(Scalar::Float)),
            _ => None,
        }
    }
}

/// A TOML value with its origin, recursively.
#[derive(Clone, Debug)]
pub struct SValue {
    pub kind: SKind,
    pub origin: Origin,
}

#[derive(Clone, Debug)]
pub enum SKind {
    String(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
    /// Kept as text: no lmgeo parameter is a date, but the value must still
    /// be reported faithfully if someone writes one.
    Datetime(String),
    Array(Vec<SValue>),
    Table(STable),
}

/// An ordered table whose keys remember where they were written.
#[derive(Clone, Debug, Default)]
pub struct STable {
    pub entries: IndexMap<String, SEntry>,
}

#[derive(Clone, Debug)]
pub struct SEntry {
    pub key_origin: Origin,
    pub value: SValue,
}

impl STable {
    pub fn get(&self, key: &str) -> Option<&SValue> {
        self.entries.get(key).map(|e| &e.value)
    }

    pub fn entry(&self, key: &str) -> Option<&SEntry> {
        self.entries.get(key)
    }

    pub fn insert(&mut self, key: String, key_origin: Origin, value: SValue) {
        self.entries.insert(key, SEntry { key_origin, value });
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &SEntry)> {
        self.entries.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl SValue {
    pub fn new(kind: SKind, origin: Origin) -> Self {
        Self { kind, origin }
    }

    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            SKind::String(_) => "a string",
            SKind::Integer(_) => "an integer",
            SKind::Float(_) => "a float",
            SKind::Bool(_) => "a boolean",
            SKind::Datetime(_) => "a date-time",
            SKind::Array(_) => "an array",
            SKind::Table(_) => "a table",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            SKind::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_table(&self) -> Option<&STable> {
        match &self.kind {
            SKind::Table(t) => Some(t),
            _ => None,
        }
    }

    pub fn as_table_mut(&mut self) -> Option<&mut STable> {
        match &mut self.kind {
            SKind::Table(t) => Some(t),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[SValue]> {
        match &self.kind {
            SKind::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_scalar(&self) -> Option<Scalar> {
        match &self.kind {
            SKind::String(s) => Some(Scalar::String(s.clone())),
            SKind::Integer(i) => Some(Scalar::Integer(*i)),
            SKind::Float(x) => Some(Scalar::Float(*x)),
            SKind::Bool(b) => Some(Scalar::Bool(*b)),
            _ => None,
        }
    }

    pub fn from_scalar(scalar: &Scalar, origin: Origin) -> Self {
        let kind = match scalar {
            Scalar::String(s) => SKind::String(s.clone()),
            Scalar::Integer(i) => SKind::Integer(*i),
            Scalar::Float(x) => SKind::Float(*x),
            Scalar::Bool(b) => SKind::Bool(*b),
        };
        Self { kind, origin }
    }

    /// Converts a parsed document (keeping spans) into an owned tree.
    pub fn from_toml_document(table: &DeTable<'_>, span: Span) -> Result<Self, (String, Span)> {
        let mut out = STable::default();
        for (key, value) in table.iter() {
            let converted = Self::from_toml(value.get_ref(), value.span())?;
            out.insert(
                key.get_ref().to_string(),
                Origin::File(key.span()),
                converted,
            );
        }
        Ok(Self::new(SKind::Table(out), Origin::File(span)))
    }

    fn from_toml(value: &DeValue<'_>, span: Span) -> Result<Self, (String, Span)> {
        let kind = match value {
            DeValue::String(s) => SKind::String(s.to_string()),
            DeValue::Integer(i) => {
                SKind::Integer(i64::from_str_radix(i.as_str(), i.radix()).map_err(|_| {
                    (
                        format!("integer `{i}` does not fit in 64 bits"),
                        span.clone(),
                    )
                })?)
            }
            DeValue::Float(x) => SKind::Float(
                x.as_str()
                    .replace('_', "")
                    .parse::<f64>()
                    .map_err(|_| (format!("`{x}` is not a valid float"), span.clone()))?,
            ),
            DeValue::Boolean(b) => SKind::Bool(*b),
            DeValue::Datetime(d) => SKind::Datetime(d.to_string()),
            DeValue::Array(items) => SKind::Array(
                items
                    .iter()
                    .map(|item| Self::from_toml(item.get_ref(), item.span()))
                    .collect::<Result<_, _>>()?,
            ),
            DeValue::Table(table) => {
                return Self::from_toml_document(table, span);
            }
        };
        Ok(Self::new(kind, Origin::File(span)))
    }

    /// Plain JSON, for canonical parameters and plugin requests.
    pub fn to_json(&self) -> serde_json::Value {
        match &self.kind {
            SKind::String(s) | SKind::Datetime(s) => serde_json::Value::String(s.clone()),
            SKind::Integer(i) => serde_json::Value::from(*i),
            SKind::Float(x) => serde_json::Number::from_f64(*x)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            SKind::Bool(b) => serde_json::Value::Bool(*b),
            SKind::Array(items) => {
                serde_json::Value::Array(items.iter().map(Self::to_json).collect())
            }
            SKind::Table(t) => serde_json::Value::Object(
                t.iter()
                    .map(|(k, e)| (k.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }
}

/// An error raised while deserializing an [`SValue`], located at the value
/// (or key) that caused it.
#[derive(Debug, Clone)]
pub struct ValueError {
    pub message: String,
    pub origin: Option<Origin>,
}

impl ValueError {
    fn at(mut self, origin: &Origin) -> Self {
        if self.origin.is_none() {
            self.origin = Some(origin.clone());
        }
        self
    }
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ValueError {}

impl de::Error for ValueError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ValueError {
            message: msg.to_string(),
            origin: None,
        }
    }
}

/// Deserializes any serde type from a located value, attaching the location
/// of the offending key or value to every error.
pub fn deserialize<T: de::DeserializeOwned>(value: &SValue) -> Result<T, ValueError> {
    T::deserialize(value).map_err(|e| e.at(&value.origin))
}

impl<'de> de::Deserializer<'de> for &'de SValue {
    type Error = ValueError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        let result = match &self.kind {
            SKind::String(s) | SKind::Datetime(s) => visitor.visit_str(s),
            SKind::Integer(i) => visitor.visit_i64(*i),
            SKind::Float(x) => visitor.visit_f64(*x),
            SKind::Bool(b) => visitor.visit_bool(*b),
            SKind::Array(items) => visitor.visit_seq(SeqReader {
                items: items.iter(),
            }),
            SKind::Table(t) => visitor.visit_map(TableReader {
                entries: t.entries.iter(),
                pending: None,
            }),
        };
        result.map_err(|e| e.at(&self.origin))
    }

    // A parameter declared as a float accepts an integer literal: writing
    // `eps = 1` for 1.0 is not a mistake worth an error.
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match &self.kind {
            SKind::Integer(i) => visitor.visit_f64(*i as f64),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        match &self.kind {
            SKind::String(s) => visitor
                .visit_enum(s.as_str().into_deserializer())
                .map_err(|e: ValueError| e.at(&self.origin)),
            SKind::Table(t) if t.entries.len() == 1 => {
                let (variant, entry) = t.entries.iter().next().expect("one entry");
                visitor
                    .visit_enum(EnumReader { variant, entry })
                    .map_err(|e| e.at(&self.origin))
            }
            _ => Err(ValueError {
                message: format!(
                    "expected a string naming a variant, found {}",
                    self.type_name()
                ),
                origin: Some(self.origin.clone()),
            }),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 char str string
        bytes byte_buf unit unit_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

struct SeqReader<'a> {
    items: std::slice::Iter<'a, SValue>,
}

impl<'de> SeqAccess<'de> for SeqReader<'de> {
    type Error = ValueError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ValueError> {
        match self.items.next() {
            Some(item) => seed
                .deserialize(item)
                .map(Some)
                .map_err(|e| e.at(&item.origin)),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct TableReader<'a> {
    entries: indexmap::map::Iter<'a, String, SEntry>,
    pending: Option<&'a SEntry>,
}

impl<'de> MapAccess<'de> for TableReader<'de> {
    type Error = ValueError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ValueError> {
        match self.entries.next() {
            Some((key, entry)) => {
                self.pending = Some(entry);
                seed.deserialize(key.as_str().into_deserializer())
                    .map(Some)
                    .map_err(|e: ValueError| e.at(&entry.key_origin))
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ValueError> {
        let entry = self
            .pending
            .take()
            .expect("serde asks for a value only after a key");
        seed.deserialize(&entry.value)
            .map_err(|e| e.at(&entry.value.origin))
    }
}

struct EnumReader<'a> {
    variant: &'a str,
    entry: &'a SEntry,
}

impl<'de> de::EnumAccess<'de> for EnumReader<'de> {
    type Error = ValueError;
    type Variant = &'de SValue;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, &'de SValue), ValueError> {
        let variant = seed
            .deserialize(self.variant.into_deserializer())
            .map_err(|e: ValueError| e.at(&self.entry.key_origin))?;
        Ok((variant, &self.entry.value))
    }
}

impl<'de> de::VariantAccess<'de> for &'de SValue {
    type Error = ValueError;

    fn unit_variant(self) -> Result<(), ValueError> {
        Err(ValueError {
            message: "expected a bare variant name".into(),
            origin: Some(self.origin.clone()),
        })
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, ValueError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        de::Deserializer::deserialize_map(self, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn parse(text: &str) -> SValue {
        let doc = DeTable::parse(text).expect("valid toml");
        SValue::from_toml_document(doc.get_ref(), doc.span()).expect("convertible")
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Params {
        eps: f64,
        #[serde(default)]
        layers: Vec<u32>,
        mode: Mode,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        CenterL2,
        None,
    }

    #[test]
    fn typed_params_deserialize_with_integer_to_float_coercion() {
        let v = parse("eps = 1\nlayers = [1, 2]\nmode = \"center_l2\"\n");
        let p: Params = deserialize(&v).unwrap();
        assert_eq!(
            p,
            Params {
                eps: 1.0,
                layers: vec![1, 2],
                mode: Mode::CenterL2
            }
        );
    }

    #[test]
    fn unknown_field_error_points_at_the_key() {
        let text = "eps = 0.1\nmode = \"none\"\nepsilon = 2\n";
        let err = deserialize::<Params>(&parse(text)).unwrap_err();
        assert!(
            err.message.contains("unknown field `epsilon`"),
            "{}",
            err.message
        );
        let span = err.origin.unwrap().span().unwrap();
        assert_eq!(&text[span], "epsilon");
    }

    #[test]
    fn wrong_type_error_points_at_the_value() {
        let text = "eps = \"small\"\nmode = \"none\"\n";
        let err = deserialize::<Params>(&parse(text)).unwrap_err();
        assert!(err.message.contains("invalid type"), "{}", err.message);
        assert_eq!(&text[err.origin.unwrap().span().unwrap()], "\"small\"");
    }

    #[test]
    fn bad_variant_error_points_at_the_value() {
        let text = "eps = 0.1\nmode = \"centre\"\n";
        let err = deserialize::<Params>(&parse(text)).unwrap_err();
        assert!(
            err.message.contains("unknown variant `centre`"),
            "{}",
            err.message
        );
        assert!(err.message.contains("center_l2"), "{}", err.message);
        assert_eq!(&text[err.origin.unwrap().span().unwrap()], "\"centre\"");
    }

    #[test]
    fn nested_array_element_error_points_at_the_element() {
        let text = "eps = 0.1\nmode = \"none\"\nlayers = [1, -2]\n";
        let err = deserialize::<Params>(&parse(text)).unwrap_err();
        assert_eq!(&text[err.origin.unwrap().span().unwrap()], "-2");
    }
}
