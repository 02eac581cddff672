//! Long-context retrieval tasks, generated deterministically from a seed over a haystack of
//! held-out text: passkey (a needle at a chosen depth), multi-key needle and variable tracking
//! (RULER-style). Each trial is a prompt and the strings a correct answer contains.

use rand::{rngs::StdRng, Rng, SeedableRng};
use spotlight_llama::Tokenizer;

use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RetrievalTask {
    /// One pass key at a given depth of the haystack.
    Passkey,
    /// Four "special magic numbers" for different words; the question asks for one (RULER MK-NIAH).
    Multikey,
    /// A chain of variable assignments spread from the given depth; name every variable that
    /// holds the value (RULER VT).
    Vartrack,
}

impl RetrievalTask {
    pub fn name(self) -> &'static str {
        match self {
            Self::Passkey => "passkey",
            Self::Multikey => "multikey",
            Self::Vartrack => "vartrack",
        }
    }

    /// New tokens a full answer needs.
    pub fn answer_tokens(self) -> usize {
        match self {
            Self::Passkey => 10,
            Self::Multikey => 12,
            Self::Vartrack => 32,
        }
    }
}

/// One prompt and what its answer must contain.
#[derive(Debug, Clone)]
pub struct Trial {
    pub prompt: Vec<u32>,
    /// Strings the generated text must contain; the score is the share found.
    pub expected: Vec<String>,
}

impl Trial {
    /// Share of the expected strings found in `output`.
    pub fn score(&self, output: &str) -> f64 {
        let found = self.expected.iter().filter(|e| output.contains(*e)).count();
        found as f64 / self.expected.len().max(1) as f64
    }
}

const WORDS: [&str; 12] = [
    "harpoon", "compass", "lantern", "anchor", "biscuit", "parrot", "violin", "cabbage", "thimble",
    "glacier", "saddle", "trumpet",
];

fn digits(rng: &mut StdRng, n: u32) -> String {
    let lo = 10u64.pow(n - 1);
    rng.random_range(lo..lo * 10).to_string()
}

fn var_name(rng: &mut StdRng) -> String {
    (0..5)
        .map(|_| char::from(b'A' + rng.random_range(0..26u8)))
        .collect()
}

/// Builds the trial of `task` with about `context` prompt tokens: the haystack is `haystack`
/// (tokens of held-out text, read from `offset`) with the task's statements inserted, the first
/// at `depth` ∈ [0, 1] of the haystack.
pub fn build(
    task: RetrievalTask,
    tok: &Tokenizer,
    haystack: &[u32],
    offset: usize,
    context: usize,
    depth: f64,
    seed: u64,
) -> Result<Trial> {
    let mut rng = StdRng::seed_from_u64(seed);
    let enc = |s: &str| -> Result<Vec<u32>> { Ok(tok.encode(s, false)?) };
    let (intro, statements, question, expected): (String, Vec<String>, String, Vec<String>) =
        match task {
            RetrievalTask::Passkey => {
                let key = digits(&mut rng, 5);
                (
                    "There is an important pass key hidden inside a lot of irrelevant text. \
                     Find it and memorize it. I will quiz you about the pass key.\n\n"
                        .into(),
                    vec![format!(
                        "\nThe pass key is {key}. Remember it. {key} is the pass key.\n"
                    )],
                    "\n\nWhat is the pass key? The pass key is".into(),
                    vec![key],
                )
            }
            RetrievalTask::Multikey => {
                let mut words = WORDS.to_vec();
                let mut chosen = Vec::new();
                for _ in 0..4 {
                    chosen.push(words.remove(rng.random_range(0..words.len())));
                }
                let numbers: Vec<String> = (0..4).map(|_| digits(&mut rng, 6)).collect();
                let statements = chosen
                    .iter()
                    .zip(&numbers)
                    .map(|(w, n)| format!("\nOne of the special magic numbers for {w} is: {n}.\n"))
                    .collect();
                // The statement at `depth` is the first; the question asks for it.
                (
                    "Some special magic numbers are hidden inside the following text. \
                     Make sure to memorize them. I will quiz you about the numbers afterwards.\n\n"
                        .into(),
                    statements,
                    format!(
                        "\n\nWhat is the special magic number for {}? The special magic number for {} is:",
                        chosen[0], chosen[0]
                    ),
                    vec![numbers[0].clone()],
                )
            }
            RetrievalTask::Vartrack => {
                let value = digits(&mut rng, 5);
                let names: Vec<String> = (0..4).map(|_| var_name(&mut rng)).collect();
                let mut statements = vec![format!("\nVAR {} = {value}.\n", names[0])];
                for w in names.windows(2) {
                    statements.push(format!("\nVAR {} = VAR {}.\n", w[1], w[0]));
                }
                (
                    "Memorize and track the chain(s) of variable assignment hidden in the \
                     following text.\n\n"
                        .into(),
                    statements,
                    format!(
                        "\n\nQuestion: Find all variables that are assigned the value {value} in the \
                         text above. Answer: According to the chain(s) of variable assignment in the \
                         text above, 4 variables are assigned the value {value}, they are:"
                    ),
                    names,
                )
            }
        };
    let intro = enc(&intro)?;
    let question = enc(&question)?;
    let statements: Vec<Vec<u32>> = statements.iter().map(|s| enc(s)).collect::<Result<_>>()?;
    let fixed = intro.len() + question.len() + statements.iter().map(Vec::len).sum::<usize>();
    let fill = context.saturating_sub(fixed);
    let start = offset % haystack.len().saturating_sub(fill).max(1);
    let hay = &haystack[start..(start + fill).min(haystack.len())];
    // Insertion points: the first statement at `depth`, the rest spread evenly after it
    // (multikey: spread over the whole haystack, skipping the target's point).
    let n = statements.len();
    let at: Vec<usize> = (0..n)
        .map(|i| {
            let f = match task {
                RetrievalTask::Multikey if i > 0 => {
                    let f = i as f64 / n as f64;
                    if (f - depth).abs() < 0.5 / n as f64 {
                        (f + 0.5 / n as f64) % 1.0
                    } else {
                        f
                    }
                }
                _ => depth + (1.0 - depth) * i as f64 / n as f64,
            };
            ((f.clamp(0.0, 1.0) * hay.len() as f64) as usize).min(hay.len())
        })
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (at[i], i));
    let mut prompt = intro;
    let mut pos = 0;
    for i in order {
        prompt.extend_from_slice(&hay[pos..at[i]]);
        prompt.extend_from_slice(&statements[i]);
        pos = at[i];
    }
    prompt.extend_from_slice(&hay[pos..]);
    prompt.extend_from_slice(&question);
    Ok(Trial { prompt, expected })
}
