//! The reference a pipeline's author reads, written from the registry: `recsift ops [NAME]`
//! and the README's generated tables (`recsift ops --markdown`).

use std::fmt::Write;

use super::{
    FAMILIES, OPERATORS, OptionDef, STRATEGIES, TRAIN_OPTIONS, family, operator, takes_train_option,
};
use crate::metrics::METRICS;

/// The families of a train option, as the reference shows them.
fn families_cell(option: &OptionDef) -> String {
    if option.families.is_empty() {
        return "all".to_owned();
    }
    let names: Vec<String> = option.families.iter().map(|f| format!("`{f}`")).collect();
    names.join(", ")
}

/// Escapes a cell of a Markdown table.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// Writes `options` as a Markdown table titled `title`.
fn options_table(out: &mut String, title: &str, options: &[OptionDef]) {
    let _ = write!(
        out,
        "\n{title}:\n\n| key | type | default | meaning |\n|---|---|---|---|\n"
    );
    for o in options {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            o.name,
            o.ty,
            o.default,
            cell(o.doc)
        );
    }
}

/// The README's generated reference: the operators, each operator's options, the train
/// options, the strategies and the metrics, as Markdown tables.
pub fn markdown() -> String {
    let mut out = String::new();
    out.push_str("| operator | inputs | what it does |\n|---|---|---|\n");
    for op in OPERATORS {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} |",
            op.key,
            op.inputs,
            cell(op.summary)
        );
    }
    for op in OPERATORS.iter().filter(|op| !op.options.is_empty()) {
        options_table(&mut out, &format!("`{}:` options", op.key), op.options);
    }
    out.push_str(
        "\nModel families (the key under `train:`; `recsift ops FAMILY` lists the options \
         each takes):\n\n| family | reads item text | what it is |\n|---|---|---|\n",
    );
    for f in FAMILIES {
        let text = if f.reads_text { "yes" } else { "no" };
        let _ = writeln!(out, "| `{}` | {text} | {} |", f.key, cell(f.summary));
    }
    out.push_str(
        "\n`train:` options (under the family's key, e.g. `train: {mf: {dim: 32}}`):\n\n\
         | key | type | default | families | meaning |\n|---|---|---|---|---|\n",
    );
    for o in TRAIN_OPTIONS {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} |",
            o.name,
            o.ty,
            o.default,
            families_cell(o),
            cell(o.doc)
        );
    }
    out.push_str(
        "\nStrategies (`select: {strategy: ...}`; a strategy's own options sit beside \
         `strategy` and `budget`):\n\n| name | ranks pool samples by | its options |\n|---|---|---|\n",
    );
    for s in STRATEGIES {
        let options: Vec<String> = s.options.iter().map(|o| format!("`{}`", o.name)).collect();
        let options = if options.is_empty() {
            "none".to_owned()
        } else {
            options.join(", ")
        };
        let _ = writeln!(out, "| `{}` | {} | {options} |", s.name, cell(s.doc));
    }
    for s in STRATEGIES.iter().filter(|s| !s.options.is_empty()) {
        let title = format!("`strategy: {}` options (under `select:`)", s.name);
        options_table(&mut out, &title, s.options);
    }
    out.push_str("\nMetrics (`evaluate: {metrics: [...]}`; `K` is any cutoff):\n\n| name | meaning |\n|---|---|\n");
    for m in METRICS {
        let _ = writeln!(out, "| `{}` | {} |", m.name, cell(m.doc));
    }
    out
}

/// Writes option `o` as `recsift ops` lists it, `more` after its default.
fn option_entry(out: &mut String, o: &OptionDef, more: &str) {
    let _ = writeln!(
        out,
        "  {} ({}, default {}{more})\n      {}",
        o.name, o.ty, o.default, o.doc
    );
}

/// What `recsift ops` prints: every operator with its summary, or, for `name` (an operator,
/// `train`'s families, a strategy or a metric), its whole entry.
pub fn describe(name: Option<&str>) -> Result<String, String> {
    let mut out = String::new();
    let Some(name) = name else {
        out.push_str("operators (recsift ops NAME for the options):\n");
        for op in OPERATORS {
            let _ = writeln!(
                out,
                "  {:<9} <- {}\n            {}",
                op.key, op.inputs, op.summary
            );
        }
        out.push_str("model families (under `train:`):\n");
        for f in FAMILIES {
            let _ = writeln!(out, "  {:<22} {}", f.key, f.summary);
        }
        out.push_str("strategies:\n");
        for s in STRATEGIES {
            let _ = writeln!(out, "  {:<22} {}", s.name, s.doc);
        }
        out.push_str("metrics:\n");
        for m in METRICS {
            let _ = writeln!(out, "  {:<12} {}", m.name, m.doc);
        }
        return Ok(out);
    };
    if let Some(op) = operator(name) {
        let _ = writeln!(out, "{} <- {}\n  {}", op.key, op.inputs, op.summary);
        let options = if op.key == "train" {
            TRAIN_OPTIONS
        } else {
            op.options
        };
        for o in options {
            let families = if op.key == "train" {
                format!(", families {}", families_cell(o))
            } else {
                String::new()
            };
            option_entry(&mut out, o, &families);
        }
        return Ok(out);
    }
    if let Some(f) = family(name) {
        let text = if f.reads_text {
            ", reads item text (an `embed` node)"
        } else {
            ""
        };
        let _ = writeln!(out, "family {} (train){text}\n  {}", f.key, f.summary);
        for o in TRAIN_OPTIONS
            .iter()
            .filter(|o| takes_train_option(o.name, f.key))
        {
            option_entry(&mut out, o, "");
        }
        return Ok(out);
    }
    if let Some(s) = crate::strategy::Strategy::by_name(name) {
        let _ = writeln!(out, "strategy {}: {}", s.name, s.doc);
        for o in s.options {
            option_entry(&mut out, o, "");
        }
        return Ok(out);
    }
    if let Some(m) = METRICS.iter().find(|m| m.is_named(name)) {
        return Ok(format!("metric {}: {}\n", m.name, m.doc));
    }
    let known = OPERATORS
        .iter()
        .map(|op| op.key)
        .chain(FAMILIES.iter().map(|f| f.key))
        .chain(STRATEGIES.iter().map(|s| s.name))
        .chain(METRICS.iter().map(|m| m.name));
    Err(match crate::suggest::closest(name, known) {
        Some(best) => {
            format!(
                "no operator, model family, strategy or metric `{name}`; did you mean `{best}`?"
            )
        }
        None => format!(
            "no operator, model family, strategy or metric `{name}`; `recsift ops` lists them"
        ),
    })
}
