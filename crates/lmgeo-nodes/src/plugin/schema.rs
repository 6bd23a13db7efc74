//! The small type language of plugin declarations: column types of output
//! tables and parameter types with defaults, choices and bounds.

use std::fmt;
use std::str::FromStr;

use lmgeo_dag::value::{SKind, SValue, ValueError};
use lmgeo_tables::ColumnClass;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// The type a plugin promises for a column of one of its output tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// Integers of any width.
    Int,
    /// Floating point of any width.
    Float,
    /// Integers or floats.
    Number,
    String,
    Bool,
    /// A list of any kind, e.g. a vector of floats.
    List,
    /// Present, of any type.
    Any,
}

impl ColumnType {
    pub const NAMES: [&'static str; 7] =
        ["int", "float", "number", "string", "bool", "list", "any"];

    /// Whether a column of this class keeps the promise.
    pub fn accepts(self, class: ColumnClass) -> bool {
        match self {
            ColumnType::Int => class == ColumnClass::Int,
            ColumnType::Float => class == ColumnClass::Float,
            ColumnType::Number => matches!(class, ColumnClass::Int | ColumnClass::Float),
            ColumnType::String => class == ColumnClass::String,
            ColumnType::Bool => class == ColumnClass::Bool,
            ColumnType::List => class == ColumnClass::List,
            ColumnType::Any => true,
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let index = match self {
            ColumnType::Int => 0,
            ColumnType::Float => 1,
            ColumnType::Number => 2,
            ColumnType::String => 3,
            ColumnType::Bool => 4,
            ColumnType::List => 5,
            ColumnType::Any => 6,
        };
        f.write_str(Self::NAMES[index])
    }
}

impl FromStr for ColumnType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "int" => ColumnType::Int,
            "float" => ColumnType::Float,
            "number" => ColumnType::Number,
            "string" => ColumnType::String,
            "bool" => ColumnType::Bool,
            "list" => ColumnType::List,
            "any" => ColumnType::Any,
            other => {
                return Err(format!(
                    "unknown column type `{other}`; expected one of {}",
                    Self::NAMES.join(", ")
                ));
            }
        })
    }
}

impl Serialize for ColumnType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ColumnType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A scalar parameter type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScalarType {
    Bool,
    Int,
    Float,
    String,
}

/// The type of a plugin parameter: a scalar or a list of one scalar type
/// (written `int[]`, `string[]`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamType {
    Scalar(ScalarType),
    List(ScalarType),
}

impl ParamType {
    pub const NAMES: [&'static str; 8] = [
        "bool", "int", "float", "string", "bool[]", "int[]", "float[]", "string[]",
    ];
}

impl fmt::Display for ScalarType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScalarType::Bool => "bool",
            ScalarType::Int => "int",
            ScalarType::Float => "float",
            ScalarType::String => "string",
        })
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamType::Scalar(s) => write!(f, "{s}"),
            ParamType::List(s) => write!(f, "{s}[]"),
        }
    }
}

impl FromStr for ParamType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let scalar = |name: &str| match name {
            "bool" => Some(ScalarType::Bool),
            "int" => Some(ScalarType::Int),
            "float" => Some(ScalarType::Float),
            "string" => Some(ScalarType::String),
            _ => None,
        };
        let parsed = match s.strip_suffix("[]") {
            Some(inner) => scalar(inner).map(ParamType::List),
            None => scalar(s).map(ParamType::Scalar),
        };
        parsed.ok_or_else(|| {
            format!(
                "unknown parameter type `{s}`; expected one of {}",
                Self::NAMES.join(", ")
            )
        })
    }
}

impl<'de> Deserialize<'de> for ParamType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One declared parameter of a manifest plugin.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub ty: ParamType,
    /// Checked against `ty` when the manifest is read; `None` makes the
    /// parameter required.
    pub default: Option<Value>,
    pub doc: String,
    /// Allowed values (for scalars, or for every element of a list).
    pub choices: Option<Vec<Value>>,
    /// Inclusive bounds for numbers (and every element of a number list).
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// How JSON values are named in messages, matching the experiment's errors.
pub(crate) fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a float",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

fn expected_name(ty: ScalarType) -> &'static str {
    match ty {
        ScalarType::Bool => "a boolean",
        ScalarType::Int => "an integer",
        ScalarType::Float => "a number",
        ScalarType::String => "a string",
    }
}

impl ParamSpec {
    /// Checks one scalar against the type, choices and bounds, returning its
    /// canonical JSON (integers written for a float become floats, so `1`
    /// and `1.0` key alike).
    fn check_scalar(&self, ty: ScalarType, value: &Value) -> Result<Value, String> {
        let canonical = match (ty, value) {
            (ScalarType::Bool, Value::Bool(_)) | (ScalarType::String, Value::String(_)) => {
                value.clone()
            }
            (ScalarType::Int, Value::Number(n)) if n.is_i64() || n.is_u64() => value.clone(),
            (ScalarType::Float, Value::Number(n)) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                if !x.is_finite() {
                    return Err("must be a finite number".into());
                }
                serde_json::Number::from_f64(x)
                    .map(Value::Number)
                    .ok_or_else(|| "must be a finite number".to_string())?
            }
            _ => {
                return Err(format!(
                    "must be {}, found {}",
                    expected_name(ty),
                    json_type_name(value)
                ));
            }
        };
        if let Some(choices) = &self.choices
            && !choices.iter().any(|c| same_value(c, &canonical))
        {
            let list: Vec<String> = choices.iter().map(Value::to_string).collect();
            return Err(format!(
                "is {canonical}, which is not one of {}",
                list.join(", ")
            ));
        }
        if let Some(x) = canonical.as_f64() {
            if let Some(min) = self.min
                && x < min
            {
                return Err(format!("is {canonical}, below the minimum {min}"));
            }
            if let Some(max) = self.max
                && x > max
            {
                return Err(format!("is {canonical}, above the maximum {max}"));
            }
        }
        Ok(canonical)
    }

    /// Checks a whole value (used for defaults, which have no location).
    pub fn check(&self, value: &Value) -> Result<Value, String> {
        match self.ty {
            ParamType::Scalar(ty) => self.check_scalar(ty, value),
            ParamType::List(ty) => match value {
                Value::Array(items) => items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        self.check_scalar(ty, item)
                            .map_err(|e| format!("element {} {e}", i + 1))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array),
                other => Err(format!(
                    "must be a list of {}s, found {}",
                    ty,
                    json_type_name(other)
                )),
            },
        }
    }

    /// Checks a value from an experiment, locating an error at the value or
    /// at the offending element of a list.
    pub fn check_located(&self, value: &SValue) -> Result<Value, ValueError> {
        let at = |origin: &lmgeo_dag::value::Origin, message: String| ValueError {
            message: format!("`{}` {message}", self.name),
            origin: Some(origin.clone()),
        };
        match (self.ty, &value.kind) {
            (ParamType::List(ty), SKind::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    self.check_scalar(ty, &item.to_json())
                        .map_err(|e| at(&item.origin, format!("element {} {e}", i + 1)))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            (_, SKind::Datetime(_)) => Err(at(
                &value.origin,
                format!("must be {}, found a date-time", self.ty_description()),
            )),
            _ => self
                .check(&value.to_json())
                .map_err(|e| at(&value.origin, e)),
        }
    }

    fn ty_description(&self) -> String {
        match self.ty {
            ParamType::Scalar(ty) => expected_name(ty).to_string(),
            ParamType::List(ty) => format!("a list of {ty}s"),
        }
    }
}

/// Equality that treats 2 and 2.0 alike, so `choices = [1, 2]` accepts a
/// float parameter written `2`.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(ty: &str) -> ParamSpec {
        ParamSpec {
            name: "p".into(),
            ty: ty.parse().unwrap(),
            default: None,
            doc: String::new(),
            choices: None,
            min: None,
            max: None,
        }
    }

    #[test]
    fn types_parse_and_reject_unknown_names() {
        assert_eq!(
            "int[]".parse::<ParamType>().unwrap(),
            ParamType::List(ScalarType::Int)
        );
        assert!(
            "integer"
                .parse::<ParamType>()
                .unwrap_err()
                .contains("expected one of bool, int")
        );
        assert_eq!("number".parse::<ColumnType>().unwrap(), ColumnType::Number);
        assert!("double".parse::<ColumnType>().is_err());
    }

    #[test]
    fn scalars_are_checked_and_canonical() {
        assert_eq!(spec("float").check(&json!(2)).unwrap(), json!(2.0));
        assert!(spec("float").check(&json!(2)).unwrap().is_f64());
        assert_eq!(
            spec("int").check(&json!(2.5)).unwrap_err(),
            "must be an integer, found a float"
        );
        assert_eq!(
            spec("bool").check(&json!("yes")).unwrap_err(),
            "must be a boolean, found a string"
        );
        assert_eq!(
            spec("int[]").check(&json!([1, "x"])).unwrap_err(),
            "element 2 must be an integer, found a string"
        );
    }

    #[test]
    fn choices_and_bounds() {
        let mut s = spec("string");
        s.choices = Some(vec![json!("mean"), json!("max")]);
        assert!(s.check(&json!("mean")).is_ok());
        assert_eq!(
            s.check(&json!("median")).unwrap_err(),
            "is \"median\", which is not one of \"mean\", \"max\""
        );
        let mut n = spec("float");
        n.min = Some(0.0);
        n.max = Some(1.0);
        assert!(n.check(&json!(1)).is_ok());
        assert_eq!(
            n.check(&json!(1.5)).unwrap_err(),
            "is 1.5, above the maximum 1"
        );
        assert_eq!(
            n.check(&json!(-1)).unwrap_err(),
            "is -1.0, below the minimum 0"
        );
    }

    #[test]
    fn column_types_accept_their_classes() {
        assert!(ColumnType::Number.accepts(ColumnClass::Int));
        assert!(ColumnType::Number.accepts(ColumnClass::Float));
        assert!(!ColumnType::Float.accepts(ColumnClass::Int));
        assert!(!ColumnType::String.accepts(ColumnClass::Float));
        assert!(ColumnType::Any.accepts(ColumnClass::Other));
    }
}
