//! The workload section: `--dataset`, `--dataset-path`, `--input-len`, `--output-len`,
//! the tokenizer, and how requests sample (`--temperature`, `--ignore-eos`, `--seed`).

use super::{err, ConfigError};
use crate::cli::{RunArgs, Spec};
use crate::driver::Sampling;
use crate::engine::EngineSpec;
use crate::workload::conversations::{ConversationSource, ConversationSpec};
use crate::workload::shared_prefix::{GroupOrder, SharedPrefix};
use crate::workload::{parse_length, LengthDist, WorkloadSpec};
use std::path::PathBuf;

/// A scored request's token budget without `--output-len` (lm-evaluation-harness's
/// `max_gen_toks` for GSM8K).
pub const SCORED_OUTPUT_LEN: u32 = 256;

/// Highest sampling temperature accepted (a typo guard: logits / T underflows long before).
pub const MAX_TEMPERATURE: f32 = 100.0;

#[derive(Clone, Debug)]
pub struct WorkloadSection {
    pub spec: WorkloadSpec,
    /// tokenizer.json (None: synthetic ids without a model).
    pub tokenizer: Option<PathBuf>,
    pub sampling: Sampling,
    pub seed: u64,
}

pub fn parse(a: &RunArgs, engine: &EngineSpec) -> Result<WorkloadSection, ConfigError> {
    let dataset = a.dataset.as_deref().unwrap_or("synthetic");
    let need_path = |what: &str| -> Result<PathBuf, ConfigError> {
        let Some(p) = &a.dataset_path else {
            return err(
                "dataset-path",
                format!("--dataset {dataset} needs --dataset-path FILE ({what})"),
            );
        };
        if !p.is_file() {
            return err(
                "dataset-path",
                format!("--dataset-path {}: no such file", p.display()),
            );
        }
        Ok(p.clone())
    };
    let fixed_output = |what: &str| -> Result<Option<u32>, ConfigError> {
        match a
            .output_len
            .as_ref()
            .map(|s| length("output-len", s))
            .transpose()?
        {
            None => Ok(None),
            Some(LengthDist::Fixed { len }) => Ok(Some(len)),
            Some(_) => err(
                "output-len",
                format!("--output-len for {what} must be a fixed number of tokens"),
            ),
        }
    };
    let no_input_len = |what: &str| {
        if a.input_len.is_some() {
            return err("input-len", format!(
                "--input-len does not apply to --dataset {dataset} (prompt lengths come from the {what})"
            ));
        }
        Ok(())
    };
    if dataset != "shared-prefix" {
        let given = [
            ("num-groups", a.num_groups.is_some()),
            ("prompts-per-group", a.prompts_per_group.is_some()),
            ("system-prompt-len", a.system_prompt_len.is_some()),
            ("question-len", a.question_len.is_some()),
            ("group-order", a.group_order.is_some()),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, g)| *g) {
            return err(
                flag,
                format!(
                    "--{flag} applies only to --dataset shared-prefix; add it or drop --{flag}"
                ),
            );
        }
    }
    if a.fewshot.is_some() && !matches!(dataset, "scored" | "arithmetic") {
        return err(
            "fewshot",
            "--fewshot applies only to --dataset scored and arithmetic; add one or drop --fewshot",
        );
    }
    if dataset != "conversations" {
        let given = [
            ("turns", a.turns.is_some()),
            ("think-time", a.think_time.is_some()),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, g)| *g) {
            return err(
                flag,
                format!(
                    "--{flag} applies only to --dataset conversations; add it or drop --{flag}"
                ),
            );
        }
    }
    let spec = match dataset {
        "synthetic" => WorkloadSpec::Synthetic {
            input_len: dist("input-len", &a.input_len, 128)?,
            output_len: dist("output-len", &a.output_len, 128)?,
        },
        "sharegpt" => {
            no_input_len("data")?;
            WorkloadSpec::Sharegpt {
                output_len: fixed_output("sharegpt")?,
                path: need_path("ShareGPT_V3_unfiltered_cleaned_split.json")?,
            }
        }
        "prompts" => {
            no_input_len("file")?;
            WorkloadSpec::Prompts {
                output_len: fixed_output("a prompt file")?.unwrap_or(128),
                path: need_path("JSONL with \"prompt\", or text, one prompt per line")?,
            }
        }
        "shared-prefix" => {
            no_input_len("system prompt and question lengths")?;
            // SGLang's generated-shared-prefix defaults.
            let count =
                |flag: &'static str, v: Option<u32>, default: u32| match v.unwrap_or(default) {
                    0 => err(flag, format!("--{flag} 0: give at least 1")),
                    n => Ok(n),
                };
            WorkloadSpec::SharedPrefix(SharedPrefix {
                num_groups: count("num-groups", a.num_groups, 64)?,
                prompts_per_group: count("prompts-per-group", a.prompts_per_group, 16)?,
                system_prompt_len: dist("system-prompt-len", &a.system_prompt_len, 2048)?,
                question_len: dist("question-len", &a.question_len, 128)?,
                output_len: dist("output-len", &a.output_len, 256)?,
                order: match a.group_order.as_deref() {
                    None | Some("shuffled") => GroupOrder::Shuffled,
                    Some("grouped") => GroupOrder::Grouped,
                    Some(other) => {
                        return err(
                            "group-order",
                            format!("--group-order {other}: use grouped or shuffled"),
                        )
                    }
                },
            })
        }
        "trace" => {
            no_input_len("trace")?;
            WorkloadSpec::Trace {
                output_len: fixed_output("a trace")?,
                path: need_path("a Mooncake JSONL or BurstGPT CSV trace")?,
                // Set by the stop section (`--num-requests`).
                lines: None,
            }
        }
        "conversations" => {
            let source = match &a.dataset_path {
                None => ConversationSource::Synthetic {
                    input_len: dist("input-len", &a.input_len, 128)?,
                    output_len: dist("output-len", &a.output_len, 128)?,
                },
                Some(_) => {
                    no_input_len("ShareGPT conversations")?;
                    ConversationSource::Sharegpt {
                        output_len: fixed_output("ShareGPT conversations")?,
                        path: need_path("ShareGPT_V3_unfiltered_cleaned_split.json")?,
                    }
                }
            };
            let think_time_ms = match a.think_time.as_ref() {
                None => None,
                Some(s) if s.0.trim().trim_end_matches("ms") == "0" => None,
                Some(s) => Some(length("think-time", &Spec(s.0.trim_end_matches("ms").into()))?),
            };
            WorkloadSpec::Conversations(ConversationSpec {
                turns: dist("turns", &a.turns, 4)?,
                think_time_ms,
                source,
            })
        }
        "scored" => {
            no_input_len("file")?;
            WorkloadSpec::Scored {
                output_len: fixed_output("a scored dataset")?.unwrap_or(SCORED_OUTPUT_LEN),
                fewshot: a.fewshot.unwrap_or(0),
                path: need_path("JSONL with \"question\" and \"answer\" (GSM8K), or \"prompt\", \"answer\" and \"pattern\"")?,
            }
        }
        "arithmetic" => {
            no_input_len("generated questions")?;
            if a.dataset_path.is_some() {
                return err(
                    "dataset-path",
                    "--dataset arithmetic generates its questions; drop --dataset-path, or use --dataset scored for a file",
                );
            }
            WorkloadSpec::Arithmetic {
                output_len: fixed_output("the arithmetic set")?.unwrap_or(SCORED_OUTPUT_LEN),
                fewshot: a.fewshot.unwrap_or(0),
            }
        }
        other => {
            return err(
                "dataset",
                format!(
                    "unknown --dataset '{other}'; use synthetic, sharegpt, prompts, shared-prefix, trace, conversations, scored or arithmetic"
                ),
            )
        }
    };
    let scored = matches!(
        spec,
        WorkloadSpec::Scored { .. } | WorkloadSpec::Arithmetic { .. }
    );
    if scored && a.save_token_ids == Some(false) {
        return err(
            "save-token-ids",
            format!("--dataset {dataset} scores the generated token ids, so it saves them; drop --save-token-ids false"),
        );
    }
    let tokenizer = match (&a.tokenizer, &a.model) {
        (Some(t), _) if !t.is_file() => {
            return err(
                "tokenizer",
                format!("--tokenizer {}: no such file", t.display()),
            )
        }
        (Some(t), _) => Some(t.clone()),
        (None, Some(m)) if super::model_dir(m).join("tokenizer.json").is_file() => {
            Some(super::model_dir(m).join("tokenizer.json"))
        }
        (None, Some(m)) if engine.model.needed() => {
            return err(
                "model",
                format!(
                    "--model {}: no tokenizer.json beside the model; pass --tokenizer FILE",
                    m.display()
                ),
            )
        }
        _ => None,
    };
    // Synthetic ids need no tokenizer (nor do a shared-prefix workload's or a trace's,
    // which are synthetic too).
    let synthetic_ids = matches!(dataset, "synthetic" | "shared-prefix" | "trace")
        || (dataset == "conversations" && a.dataset_path.is_none());
    if tokenizer.is_none() && !synthetic_ids {
        return err("dataset", format!("--dataset {dataset} needs a tokenizer: pass --model DIR (with tokenizer.json) or --tokenizer FILE"));
    }
    let temperature = a.temperature.unwrap_or(0.0);
    if !(temperature.is_finite() && (0.0..=MAX_TEMPERATURE).contains(&temperature)) {
        return err(
            "temperature",
            format!("--temperature {temperature}: must be from 0 (greedy) to {MAX_TEMPERATURE}"),
        );
    }
    let seed = a.seed.unwrap_or(0);
    Ok(WorkloadSection {
        spec,
        tokenizer,
        sampling: Sampling {
            ignore_eos: a.ignore_eos.unwrap_or(false),
            temperature,
            seed: Some(seed),
            // A scored workload decodes the generated ids to score them.
            return_token_ids: a.save_token_ids.unwrap_or(scored),
        },
        seed,
    })
}

fn length(flag: &'static str, s: &Spec) -> Result<LengthDist, ConfigError> {
    parse_length(&s.0).or_else(|e| err(flag, format!("--{flag} {}: {e}", s.0)))
}

/// `--flag`'s length as given, else fixed at `default`.
fn dist(flag: &'static str, given: &Option<Spec>, default: u32) -> Result<LengthDist, ConfigError> {
    given
        .as_ref()
        .map_or(Ok(LengthDist::Fixed { len: default }), |s| length(flag, s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::with;
    use crate::engine::calibration::SPEC;

    /// The error names `flag` and says `needle`.
    fn fails(a: RunArgs, flag: &str, needle: &str) {
        let e = parse(&a, &SPEC).unwrap_err();
        assert_eq!(e.flag, flag, "{e}");
        assert!(e.message.contains(needle), "expected \'{needle}\' in: {e}");
    }

    #[test]
    fn synthetic_defaults_and_lengths() {
        let w = parse(&RunArgs::default(), &SPEC).unwrap();
        assert_eq!(
            w.spec,
            WorkloadSpec::Synthetic {
                input_len: LengthDist::Fixed { len: 128 },
                output_len: LengthDist::Fixed { len: 128 }
            }
        );
        assert_eq!(
            (w.seed, w.sampling.temperature, w.tokenizer),
            (0, 0.0, None)
        );
        fails(
            with(|a| a.input_len = Some(Spec("abc".into()))),
            "input-len",
            "--input-len abc",
        );
        fails(
            with(|a| a.output_len = Some(Spec("0".into()))),
            "output-len",
            "--output-len 0",
        );
        fails(
            with(|a| a.output_len = Some(Spec("99999999999".into()))),
            "output-len",
            "--output-len 99999999999",
        );
    }

    #[test]
    fn datasets_need_a_path_and_a_tokenizer() {
        fails(
            with(|a| a.dataset = Some("sharegpt".into())),
            "dataset-path",
            "--dataset-path",
        );
        fails(
            with(|a| a.dataset = Some("nope".into())),
            "dataset",
            "unknown --dataset 'nope'",
        );
        let f = tempfile::NamedTempFile::new().unwrap();
        fails(
            with(|a| {
                a.dataset = Some("prompts".into());
                a.dataset_path = Some(f.path().into());
            }),
            "dataset",
            "needs a tokenizer",
        );
        fails(
            with(|a| {
                a.dataset = Some("prompts".into());
                a.dataset_path = Some(f.path().into());
                a.input_len = Some(Spec("5".into()));
            }),
            "input-len",
            "--input-len does not apply",
        );
        fails(
            with(|a| {
                a.dataset = Some("sharegpt".into());
                a.dataset_path = Some(f.path().into());
                a.output_len = Some(Spec("uniform:1:2".into()));
            }),
            "output-len",
            "must be a fixed number",
        );
    }

    #[test]
    fn shared_prefix_flags_take_sglangs_defaults_and_belong_to_it() {
        let w = parse(&with(|a| a.dataset = Some("shared-prefix".into())), &SPEC).unwrap();
        let WorkloadSpec::SharedPrefix(s) = w.spec else {
            panic!("{:?}", w.spec)
        };
        assert_eq!((s.num_groups, s.prompts_per_group), (64, 16));
        assert_eq!(
            (s.system_prompt_len, s.question_len, s.output_len, s.order),
            (
                LengthDist::Fixed { len: 2048 },
                LengthDist::Fixed { len: 128 },
                LengthDist::Fixed { len: 256 },
                GroupOrder::Shuffled
            )
        );
        let sp = |f: fn(&mut RunArgs)| {
            with(|a| {
                a.dataset = Some("shared-prefix".into());
                f(a)
            })
        };
        fails(
            sp(|a| a.group_order = Some("random".into())),
            "group-order",
            "grouped or shuffled",
        );
        fails(sp(|a| a.num_groups = Some(0)), "num-groups", "at least 1");
        fails(
            sp(|a| a.input_len = Some(Spec("8".into()))),
            "input-len",
            "does not apply",
        );
        fails(
            sp(|a| a.question_len = Some(Spec("x".into()))),
            "question-len",
            "--question-len x",
        );
        fails(
            with(|a| a.num_groups = Some(4)),
            "num-groups",
            "applies only to --dataset shared-prefix",
        );
    }

    #[test]
    fn temperature_is_bounded() {
        for t in [-0.1, f32::NAN, f32::INFINITY, 1000.0] {
            fails(
                with(|a| a.temperature = Some(t)),
                "temperature",
                "--temperature",
            );
        }
        let w = parse(&with(|a| a.temperature = Some(0.7)), &SPEC).unwrap();
        assert_eq!(w.sampling.temperature, 0.7);
    }
}
