//! The open place for per-point measurements beside the trace's summary: the
//! harness's own cost, the machine's load, and later GPU time, telemetry and energy.
//!
//! A measurement is one struct implementing [`Measure`]: a name, its definition text,
//! its figures (key, value, unit, and a table column where it earns one) and an
//! optional warning. [`Measures::add`] stores it in a self-describing form that the
//! JSON, CSV and table exporters render without knowing the struct, and that a result
//! directory keeps (in `run.json`) for `harness report`, `plot` and `compare`.

use serde::{Deserialize, Serialize};

/// One figure of a measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// Flat key in summary.json and summary.csv; unique across measurements.
    pub key: String,
    pub value: Option<f64>,
    pub unit: String,
    /// Table header, for the figures that earn a column.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub column: Option<String>,
    /// Decimals in the table.
    #[serde(default)]
    pub decimals: u8,
    /// In the default (brief) table too, not only with `--wide`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub brief: bool,
}

impl Figure {
    pub fn new(key: &str, value: Option<f64>, unit: &str) -> Figure {
        Figure {
            key: key.into(),
            value: value.filter(|v| v.is_finite()),
            unit: unit.into(),
            column: None,
            decimals: 2,
            brief: false,
        }
    }

    /// Shows the figure in the wide table (`--wide`) under `header`, with `decimals`
    /// decimals.
    pub fn column(mut self, header: &str, decimals: u8) -> Figure {
        self.column = Some(header.into());
        self.decimals = decimals;
        self
    }

    /// Shows the column in the default table too (it is one a reader needs first).
    pub fn brief(mut self) -> Figure {
        self.brief = true;
        self
    }

    /// The table text of the value (`-` when missing).
    pub fn cell(&self) -> String {
        self.value.map_or_else(
            || "-".into(),
            |v| format!("{v:.*}", usize::from(self.decimals)),
        )
    }
}

/// A per-point measurement. See the module docs.
pub trait Measure: Serialize {
    /// Its key in `definitions`, in each point's `measures`, and in run.json.
    const NAME: &'static str;
    /// How it was measured, printed with the results.
    const DEFINITION: &'static str;
    fn figures(&self) -> Vec<Figure>;
    /// A one-line warning about this point (a busy machine), if any.
    fn warning(&self) -> Option<String> {
        None
    }
}

/// A measurement as stored with the results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeasureRecord {
    pub name: String,
    pub definition: String,
    pub figures: Vec<Figure>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub warning: Option<String>,
    /// The struct itself, for readers that want every field.
    pub detail: serde_json::Value,
}

/// A point's measurements, in the order they were added.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Measures(pub Vec<MeasureRecord>);

impl Measures {
    pub fn add<M: Measure>(&mut self, m: &M) {
        self.0.retain(|r| r.name != M::NAME);
        self.0.push(MeasureRecord {
            name: M::NAME.into(),
            definition: M::DEFINITION.into(),
            figures: m.figures(),
            warning: m.warning(),
            detail: serde_json::to_value(m).unwrap_or(serde_json::Value::Null),
        });
    }

    pub fn get(&self, name: &str) -> Option<&MeasureRecord> {
        self.0.iter().find(|r| r.name == name)
    }

    /// Every figure, in order.
    pub fn figures(&self) -> impl Iterator<Item = &Figure> {
        self.0.iter().flat_map(|r| r.figures.iter())
    }

    /// The value of figure `key`, in any measurement.
    pub fn value(&self, key: &str) -> Option<f64> {
        self.figures().find(|f| f.key == key).and_then(|f| f.value)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|r| r.warning.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new measurement is this much code: a struct, its name and definition, its figures.
    #[derive(Serialize)]
    struct Joules {
        per_token: f64,
    }

    impl Measure for Joules {
        const NAME: &'static str = "energy";
        const DEFINITION: &'static str = "energy counter delta / output tokens (J)";
        fn figures(&self) -> Vec<Figure> {
            vec![Figure::new("joules_per_token", Some(self.per_token), "J").column("J/tok", 3)]
        }
    }

    #[test]
    fn records_are_self_describing_and_round_trip() {
        let mut m = Measures::default();
        m.add(&Joules { per_token: 0.5 });
        m.add(&Joules { per_token: 0.25 }); // the same measurement again replaces it
        assert_eq!(m.0.len(), 1);
        let r = m.get("energy").unwrap();
        assert_eq!(r.definition, Joules::DEFINITION);
        assert_eq!(r.figures[0].cell(), "0.250");
        assert_eq!(r.detail["per_token"], 0.25);
        assert_eq!(m.value("joules_per_token"), Some(0.25));
        let back: Measures = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn non_finite_values_are_missing() {
        assert_eq!(Figure::new("x", Some(f64::NAN), "").value, None);
        assert_eq!(Figure::new("x", None, "").cell(), "-");
    }
}
