//! Errors in experiment files, located and explained.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::value::{Origin, Span};

/// The text of an experiment file, kept so errors can quote it.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: Arc<str>,
}

impl SourceFile {
    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = self.text[line_start..offset].chars().count() + 1;
        (line, col)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// One problem in an experiment, with the place to fix it.
#[derive(Debug, Clone)]
pub struct SpecError {
    pub file: Arc<SourceFile>,
    pub origin: Origin,
    pub message: String,
    /// What would be valid, or how to fix it.
    pub help: Option<String>,
}

impl SpecError {
    pub fn new(file: &Arc<SourceFile>, origin: &Origin, message: impl Into<String>) -> Self {
        Self {
            file: file.clone(),
            origin: origin.clone(),
            message: message.into(),
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn span(&self) -> Option<Span> {
        self.origin.span()
    }

    /// `path:line:col`, `environment variable X` or `--set a.b=c`.
    pub fn location(&self) -> String {
        match &self.origin {
            Origin::File(span) => {
                let (line, col) = self.file.line_col(span.start);
                format!("{}:{line}:{col}", self.file.path.display())
            }
            Origin::Env(var) => format!("environment variable {var}"),
            Origin::CommandLine(arg) => format!("command line `{arg}`"),
            Origin::Generated(what) => format!("{} ({what})", self.file.path.display()),
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location(), self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecError {}

/// Every problem found in one experiment: validation reports them all at once
/// so that a user fixes a file in one pass.
#[derive(Debug, Clone)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

impl From<SpecError> for SpecErrors {
    fn from(e: SpecError) -> Self {
        SpecErrors(vec![e])
    }
}

/// The closest candidate to a misspelt name, if one is close enough to be a
/// plausible typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `valid: a, b, c` plus a suggestion when one is close.
pub fn valid_list_help<'a>(
    word: &str,
    what: &str,
    candidates: impl IntoIterator<Item = &'a str> + Clone,
) -> String {
    let list: Vec<&str> = candidates.clone().into_iter().collect();
    let mut help = if list.is_empty() {
        format!("no {what} are defined")
    } else {
        format!("valid {what}: {}", list.join(", "))
    };
    if let Some(best) = did_you_mean(word, candidates) {
        help = format!("did you mean `{best}`? {help}");
    }
    help
}

/// Optimal string alignment distance: insertions, deletions, substitutions
/// and swaps of neighbours (the commonest typo) each cost one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters() {
        let file = SourceFile {
            path: "x.toml".into(),
            text: "a = 1\nbé = 2\n".into(),
        };
        assert_eq!(file.line_col(0), (1, 1));
        let offset = file.text.find('=').unwrap();
        assert_eq!(file.line_col(offset), (1, 3));
        let second = file.text.rfind('=').unwrap();
        assert_eq!(file.line_col(second), (2, 4));
    }

    #[test]
    fn suggestions_only_for_near_misses() {
        assert_eq!(
            did_you_mean("nodez", ["name", "nodes", "grid"]),
            Some("nodes")
        );
        assert_eq!(did_you_mean("entropy", ["lasso", "grid"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("sede", "seed"), 1);
        assert_eq!(did_you_mean("sede", ["seed", "rank"]), Some("seed"));
    }
}
