//! Stop strings over streamed text: text that could still become a stop string is held back, so
//! a stop string is never sent, even when it arrives split over several tokens.

pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
        }
    }

    /// Adds newly decoded text. Returns the text that is safe to send and whether a stop string
    /// matched (then the returned text ends just before it, and generation should end).
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        self.held.push_str(piece);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first {
            let out = self.held[..at].to_string();
            self.held.clear();
            return (out, true);
        }
        // Hold back the longest tail of the text that some stop string starts with.
        let keep = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .map_or(0, |i| self.held.len() - i);
        let out: String = self.held.drain(..self.held.len() - keep).collect();
        (out, false)
    }

    /// What is still held back (sent when generation ends for another reason).
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_split_over_pieces_are_caught_and_never_sent() {
        let mut m = StopMatcher::new(vec!["\n\n".into(), "END".into()]);
        assert_eq!(m.push("Hello E"), ("Hello ".into(), false));
        assert_eq!(m.push("N"), ("".into(), false));
        assert_eq!(m.push("X, done\n"), ("ENX, done".into(), false));
        assert_eq!(m.push("\nmore"), ("".into(), true));
    }

    #[test]
    fn without_stops_everything_passes_and_flush_returns_the_rest() {
        let mut m = StopMatcher::new(vec![]);
        assert_eq!(m.push("abc"), ("abc".into(), false));
        let mut m = StopMatcher::new(vec!["éx".into()]);
        assert_eq!(m.push("caf\u{e9}"), ("caf".into(), false));
        assert_eq!(m.flush(), "é");
    }
}
