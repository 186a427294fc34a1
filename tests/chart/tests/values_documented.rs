//! values.yaml is documented line by line: every value has a comment right
//! above it, or sits inside a map whose key has one (e.g. `resources`).

use eni_ipam_chart_tests::chart_dir;

#[test]
fn every_value_has_a_comment_above_it_or_above_its_map() {
    let text = std::fs::read_to_string(chart_dir().join("values.yaml")).expect("values.yaml");
    // (indent, documented) of the keys enclosing the current line.
    let mut enclosing: Vec<(usize, bool)> = Vec::new();
    let mut previous = "";
    let mut undocumented = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('-') {
            if !trimmed.is_empty() {
                previous = trimmed;
            }
            continue;
        }
        let Some((key, value)) = trimmed.split_once(':') else { continue };
        while enclosing.last().is_some_and(|(i, _)| *i >= indent) {
            enclosing.pop();
        }
        let documented = previous.starts_with('#') || enclosing.iter().any(|(_, d)| *d);
        let is_map = value.trim().is_empty();
        if !is_map && !documented {
            undocumented.push(format!("line {}: {key}", number + 1));
        }
        enclosing.push((indent, previous.starts_with('#')));
        previous = trimmed;
    }
    assert!(undocumented.is_empty(), "values without a comment:\n{}", undocumented.join("\n"));
}
