//! One SVG a person can glance at: nodes ready over time, one line per
//! strategy, one panel per cloud. Written by hand (no plotting crate).

use std::fmt::Write as _;

/// One line: a label and sorted ready times in seconds.
pub struct Series<'a> {
    /// Legend text.
    pub label: &'a str,
    /// Sorted times at which the 1st, 2nd, ... node was ready.
    pub ready: &'a [f64],
}

/// A panel: a title and its lines.
pub struct Panel<'a> {
    /// Title above the panel.
    pub title: String,
    /// The lines.
    pub series: Vec<Series<'a>>,
    /// Nodes in the fleet (the y axis top).
    pub nodes: u32,
    /// Where the quota bound is (a dashed vertical line).
    pub quota_bound_s: f64,
}

const COLORS: [&str; 6] = ["#1b7837", "#d6604d", "#4393c3", "#b2abd2", "#e08214", "#555555"];
const W: f64 = 560.0;
const H: f64 = 320.0;
const PAD: f64 = 50.0;

/// The SVG document with the panels side by side.
pub fn svg(panels: &[Panel]) -> String {
    let mut out = String::new();
    let width = W * panels.len() as f64;
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{H}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(out, r#"<rect width="{width}" height="{H}" fill="white"/>"#);
    for (i, panel) in panels.iter().enumerate() {
        draw(&mut out, panel, i as f64 * W);
    }
    out.push_str("</svg>\n");
    out
}

fn draw(out: &mut String, panel: &Panel, x0: f64) {
    let t_max = panel
        .series
        .iter()
        .filter_map(|s| s.ready.last().copied())
        .fold(panel.quota_bound_s, f64::max)
        .max(1.0)
        * 1.05;
    let (left, right, top, bottom) = (x0 + PAD, x0 + W - 20.0, 30.0, H - PAD);
    let x = |t: f64| left + (right - left) * t / t_max;
    let y = |n: f64| bottom - (bottom - top) * n / f64::from(panel.nodes.max(1));
    let _ =
        write!(out, r#"<text x="{}" y="18" font-size="13" font-weight="bold">{}</text>"#, left, panel.title);
    let _ = write!(
        out,
        r##"<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#333"/><line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#333"/>"##
    );
    for k in 0..=4 {
        let t = t_max * f64::from(k) / 4.0;
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{:.0}s</text>"#,
            x(t),
            bottom + 15.0,
            t
        );
        let n = f64::from(panel.nodes) * f64::from(k) / 4.0;
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{:.0}</text>"#,
            left - 4.0,
            y(n) + 4.0,
            n
        );
    }
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time since the fleet joined</text>"#,
        (left + right) / 2.0,
        H - 12.0
    );
    let qb = x(panel.quota_bound_s);
    let _ = write!(
        out,
        r##"<line x1="{qb:.1}" y1="{top}" x2="{qb:.1}" y2="{bottom}" stroke="#999" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}" fill="#777">quota bound</text>"##,
        qb + 3.0,
        bottom - 6.0
    );
    for (i, s) in panel.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut points = format!("{:.1},{:.1}", x(0.0), y(0.0));
        // Thin the line to ~200 points: a person sees the shape, the JSON has the numbers.
        let step = (s.ready.len() / 200).max(1);
        for (n, t) in s.ready.iter().enumerate().filter(|(n, _)| n % step == 0 || *n + 1 == s.ready.len()) {
            let _ = write!(points, " {:.1},{:.1}", x(*t), y((n + 1) as f64));
        }
        let _ = write!(out, r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>"#);
        // The legend sits top left, where fleets that start at zero never are.
        let ly = top + 14.0 * (i as f64 + 1.0);
        let _ = write!(
            out,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            left + 10.0,
            left + 30.0,
            left + 34.0,
            ly + 4.0,
            s.label
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_has_a_line_per_series_and_the_bound() {
        let a = [1.0, 2.0, 3.0];
        let b = [5.0, 9.0];
        let doc = svg(&[Panel {
            title: "aws".into(),
            series: vec![Series { label: "ours", ready: &a }, Series { label: "(a)", ready: &b }],
            nodes: 3,
            quota_bound_s: 2.5,
        }]);
        assert!(doc.starts_with("<svg") && doc.ends_with("</svg>\n"));
        assert_eq!(doc.matches("<polyline").count(), 2);
        assert!(doc.contains("quota bound") && doc.contains(">ours<"));
    }
}
