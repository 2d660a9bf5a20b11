//! `--plot PATH`: the results as an SVG drawing of two panels against
//! message size, both on log axes: round-trip latency (p50 solid, p99
//! dashed; the floors as grey horizontal lines) and one-way throughput
//! (MB/s; memcpy as a grey line). One colour per transport, a legend
//! under the panels. Hand-written SVG: no dependency, opens in any
//! browser.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use super::coord::{Figures, Results};
use super::{Mode, Transport};
use crate::stats::size_label;

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 520.0;
const PANEL_W: f64 = 390.0;
const PANEL_H: f64 = 330.0;
const TOP: f64 = 60.0;
const LEFT: [f64; 2] = [80.0, 580.0];
const GREY: &str = "#777777";

fn colour(t: Transport) -> &'static str {
    match t {
        Transport::Shm => "#1f77b4",
        Transport::ShmNoSpin => "#2ca02c",
        Transport::Socket => "#d62728",
        Transport::UdsBaseline => "#ff7f0e",
        Transport::ShmAsync => "#9467bd",
        Transport::ShmTyped => "#17becf",
        Transport::ShmZeroCopy => "#bcbd22",
        Transport::Iceoryx2 => "#8c564b",
        Transport::Iceoryx2Event => "#e377c2",
    }
}

/// A logarithmic axis from `lo` to `hi` mapped onto `[from, to]`.
#[derive(Clone, Copy, Debug)]
struct LogAxis {
    lo: f64,
    hi: f64,
    from: f64,
    to: f64,
}

impl LogAxis {
    /// An axis covering `values`, widened to whole decades.
    fn decades(values: impl Iterator<Item = f64>, from: f64, to: f64) -> Option<LogAxis> {
        let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
        for v in values.filter(|v| v.is_finite() && *v > 0.0) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if hi <= 0.0 {
            return None;
        }
        let lo = 10f64.powf(lo.log10().floor());
        let mut hi = 10f64.powf(hi.log10().ceil());
        if hi <= lo {
            hi = lo * 10.0;
        }
        Some(LogAxis { lo, hi, from, to })
    }

    fn map(&self, v: f64) -> f64 {
        let f = (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10());
        self.from + f * (self.to - self.from)
    }

    fn decade_ticks(&self) -> Vec<f64> {
        let (a, b) = (
            self.lo.log10().round() as i32,
            self.hi.log10().round() as i32,
        );
        (a..=b).map(|k| 10f64.powi(k)).collect()
    }
}

fn number(v: f64) -> String {
    if v >= 1e9 {
        format!("{}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{}k", v / 1e3)
    } else {
        format!("{v}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One line of a panel.
struct Series {
    colour: &'static str,
    dash: Option<&'static str>,
    points: Vec<(f64, f64)>,
    /// Written next to the first point, if any.
    label: Option<&'static str>,
}

struct Panel<'a> {
    left: f64,
    title: &'a str,
    y_label: &'a str,
    series: Vec<Series>,
    /// Horizontal reference lines: value and label.
    levels: Vec<(f64, String)>,
}

fn draw_panel(svg: &mut String, p: &Panel<'_>, sizes: &[usize]) {
    let (x0, y0) = (p.left, TOP);
    let (Some(&lo), Some(&hi)) = (sizes.iter().min(), sizes.iter().max()) else {
        return;
    };
    // Sizes on the x axis, with a factor of two of room on either side.
    let x = LogAxis {
        lo: lo.max(1) as f64 / 2.0,
        hi: hi.max(1) as f64 * 2.0,
        from: x0,
        to: x0 + PANEL_W,
    };
    let ys = p
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|pt| pt.1))
        .chain(p.levels.iter().map(|l| l.0));
    let Some(y) = LogAxis::decades(ys, y0 + PANEL_H, y0) else {
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{}: no data</text>"#,
            x0 + PANEL_W / 2.0,
            y0 + PANEL_H / 2.0,
            escape(p.title)
        );
        return;
    };
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">{}</text>"#,
        x0 + PANEL_W / 2.0,
        y0 - 20.0,
        escape(p.title)
    );
    let _ = writeln!(
        svg,
        r#"<rect x="{x0}" y="{y0}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="black"/>"#
    );
    for t in y.decade_ticks() {
        let py = y.map(t);
        let _ = writeln!(
            svg,
            r##"<line x1="{x0}" y1="{py:.1}" x2="{}" y2="{py:.1}" stroke="#dddddd"/><text x="{}" y="{:.1}" text-anchor="end" font-size="11">{}</text>"##,
            x0 + PANEL_W,
            x0 - 6.0,
            py + 4.0,
            number(t)
        );
    }
    for &s in sizes {
        let px = x.map(s as f64);
        let _ = writeln!(
            svg,
            r##"<line x1="{px:.1}" y1="{y0}" x2="{px:.1}" y2="{}" stroke="#dddddd"/><text x="{px:.1}" y="{}" text-anchor="middle" font-size="11">{}</text>"##,
            y0 + PANEL_H,
            y0 + PANEL_H + 16.0,
            escape(&size_label(s))
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="12">message size</text>"#,
        x0 + PANEL_W / 2.0,
        y0 + PANEL_H + 36.0
    );
    let (lx, ly) = (x0 - 52.0, y0 + PANEL_H / 2.0);
    let _ = writeln!(
        svg,
        r#"<text x="{lx}" y="{ly}" text-anchor="middle" font-size="12" transform="rotate(-90 {lx} {ly})">{}</text>"#,
        escape(p.y_label)
    );
    for (v, label) in &p.levels {
        let py = y.map(*v);
        let _ = writeln!(
            svg,
            r#"<line x1="{x0}" y1="{py:.1}" x2="{}" y2="{py:.1}" stroke="{GREY}" stroke-dasharray="2,3"/><text x="{}" y="{:.1}" text-anchor="end" font-size="10" fill="{GREY}">{}</text>"#,
            x0 + PANEL_W,
            x0 + PANEL_W - 4.0,
            py - 3.0,
            escape(label)
        );
    }
    for s in &p.series {
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|&(sx, sy)| format!("{:.1},{:.1}", x.map(sx), y.map(sy)))
            .collect();
        if pts.is_empty() {
            continue;
        }
        let dash = s
            .dash
            .map(|d| format!(r#" stroke-dasharray="{d}""#))
            .unwrap_or_default();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
            pts.join(" "),
            s.colour
        );
        for pt in &pts {
            let (px, py) = pt.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(
                svg,
                r#"<circle cx="{px}" cy="{py}" r="3" fill="{}"/>"#,
                s.colour
            );
        }
        if let (Some(label), Some(&(sx, sy))) = (s.label, s.points.first()) {
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="10" fill="{}">{}</text>"#,
                x.map(sx) - 6.0,
                y.map(sy) + 4.0,
                s.colour,
                escape(label)
            );
        }
    }
}

fn figures(r: &Results, t: Transport, size: usize, mode: Mode) -> Option<&Figures> {
    r.cell(t, size, mode).and_then(|c| c.result.as_ref().ok())
}

/// The SVG document.
pub fn svg(r: &Results) -> String {
    let sizes = &r.plan.sizes;
    let ts = &r.plan.transports;
    let mut latency = Vec::new();
    let mut throughput = Vec::new();
    for &t in ts {
        let lat: Vec<_> = sizes
            .iter()
            .filter_map(|&s| {
                let l = figures(r, t, s, Mode::Rtt)?.latency?;
                Some((s as f64, l.p50 as f64 / 1e3, l.p99 as f64 / 1e3))
            })
            .collect();
        latency.push(Series {
            colour: colour(t),
            dash: None,
            points: lat.iter().map(|p| (p.0, p.1)).collect(),
            label: None,
        });
        latency.push(Series {
            colour: colour(t),
            dash: Some("6,4"),
            points: lat.iter().map(|p| (p.0, p.2)).collect(),
            label: None,
        });
        throughput.push(Series {
            colour: colour(t),
            dash: None,
            label: None,
            points: sizes
                .iter()
                .filter_map(|&s| {
                    let f = figures(r, t, s, Mode::OneWay)?;
                    Some((s as f64, f.bytes_per_s / 1e6))
                })
                .collect(),
        });
        throughput.push(Series {
            colour: colour(t),
            dash: Some("6,4"),
            label: None,
            points: sizes
                .iter()
                .filter_map(|&s| {
                    let f = figures(r, t, s, Mode::Events)?;
                    Some((s as f64, f.bytes_per_s / 1e6))
                })
                .collect(),
        });
    }
    let mut levels = Vec::new();
    let mut memcpy = Vec::new();
    if let Some(f) = &r.floors {
        if let Some(l) = f.spin {
            levels.push((l.p50 as f64 / 1e3, "spin floor p50".to_string()));
        }
        if let Some(l) = f.wake {
            levels.push((l.p50 as f64 / 1e3, "eventfd floor p50".to_string()));
        }
        memcpy = f
            .memcpy
            .iter()
            .filter(|(s, _)| *s >= 64 << 10)
            .map(|&(s, rate)| (s as f64, rate / 1e6))
            .collect();
    }
    if !memcpy.is_empty() {
        throughput.push(Series {
            colour: GREY,
            dash: Some("2,3"),
            points: memcpy,
            label: Some("memcpy"),
        });
    }

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="15">ipc-bench: {} client{}, {}</text>"#,
        WIDTH / 2.0,
        r.plan.clients,
        if r.plan.clients == 1 { "" } else { "s" },
        escape(&r.placement)
    );
    if r.plan.modes.contains(&Mode::Rtt) {
        let panel = Panel {
            left: LEFT[0],
            title: "Round-trip latency (p50 solid, p99 dashed)",
            y_label: "microseconds",
            series: latency,
            levels,
        };
        draw_panel(&mut svg, &panel, sizes);
    }
    let (oneway, events) = (
        r.plan.modes.contains(&Mode::OneWay),
        r.plan.modes.contains(&Mode::Events),
    );
    if oneway || events {
        let panel = Panel {
            left: LEFT[1],
            title: match (oneway, events) {
                (true, false) => "One-way throughput",
                (false, _) => "Event throughput (dashed)",
                (true, true) => "Throughput: one-way (solid), events (dashed)",
            },
            y_label: "MB/s (payload)",
            series: throughput,
            levels: Vec::new(),
        };
        draw_panel(&mut svg, &panel, sizes);
    }
    // Legend.
    let mut x = LEFT[0];
    let y = HEIGHT - 40.0;
    let mut entries: Vec<(&str, &str, Option<&str>)> =
        ts.iter().map(|&t| (t.name(), colour(t), None)).collect();
    if r.floors.is_some() {
        entries.push(("floors, memcpy", GREY, Some("2,3")));
    }
    for (name, c, dash) in entries {
        let dash = dash
            .map(|d| format!(r#" stroke-dasharray="{d}""#))
            .unwrap_or_default();
        let _ = writeln!(
            svg,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{c}" stroke-width="3"{dash}/><text x="{}" y="{}" font-size="12">{}</text>"#,
            x + 28.0,
            x + 34.0,
            y + 4.0,
            escape(name)
        );
        x += 44.0 + 8.0 * name.len() as f64;
    }
    let _ = writeln!(svg, "</svg>");
    svg
}

/// Writes the SVG to `path`.
///
/// # Errors
///
/// If the file cannot be written.
pub fn write(r: &Results, path: &Path) -> io::Result<()> {
    std::fs::write(path, svg(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_axis_spans_whole_decades() {
        let a = LogAxis::decades([3.0, 450.0].into_iter(), 0.0, 300.0).unwrap();
        assert_eq!((a.lo, a.hi), (1.0, 1000.0));
        assert!((a.map(1.0) - 0.0).abs() < 1e-9);
        assert!((a.map(1000.0) - 300.0).abs() < 1e-9);
        assert!((a.map(10.0) - 100.0).abs() < 1e-9);
        assert_eq!(a.decade_ticks(), vec![1.0, 10.0, 100.0, 1000.0]);
        assert!(LogAxis::decades([0.0, f64::NAN].into_iter(), 0.0, 1.0).is_none());
        let one = LogAxis::decades([5.0].into_iter(), 0.0, 1.0).unwrap();
        assert_eq!((one.lo, one.hi), (1.0, 10.0));
    }
}
