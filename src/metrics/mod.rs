//! Prometheus text exposition ([`Exposition`]) and [`render`], which reads
//! every counter at scrape time. The counters live with what they count:
//! the snapshot's query counters (`snapshot::counters`), the listeners'
//! (`dns::DnsStats`), the control jobs' and the health table's.

pub mod render;

use std::fmt::Write as _;

/// A Prometheus text-format document being written.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Exposition {
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
    pub fn finish(self) -> String {
        self.out
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut e = Exposition::default();
        e.family("x_total", "counter", "test");
        e.sample("x_total", &[("a", "q\"uo\\te\n")], 1.0);
        assert!(e.finish().contains("x_total{a=\"q\\\"uo\\\\te\\n\"} 1"));
    }
}
