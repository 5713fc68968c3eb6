//! The overview's throughput chart, drawn on the server as SVG: events committed (bars) and
//! jobs finished (a line) in each of the last sixty minutes. No script and no external asset;
//! every label is a number or a time the server formats, escaped by the template all the same.

use maud::{Markup, html};

use crate::store::insight::Minute;

const W: f64 = 720.0;
const H: f64 = 180.0;
const LEFT: f64 = 40.0;
const BOTTOM: f64 = 22.0;
const TOP: f64 = 10.0;

/// The last `minutes` minutes up to `now_ms`, oldest first, each with its counts (zero where
/// the store had none).
pub fn window(points: &[Minute], now_ms: i64, minutes: i64) -> Vec<Minute> {
    let last = now_ms.div_euclid(60_000);
    (last - minutes + 1..=last)
        .map(|m| {
            points
                .iter()
                .find(|p| p.at_ms.div_euclid(60_000) == m)
                .copied()
                .unwrap_or(Minute {
                    at_ms: m * 60_000,
                    ..Minute::default()
                })
        })
        .collect()
}

/// The chart of `series` (one entry per minute, oldest first).
pub fn throughput(series: &[Minute]) -> Markup {
    let top = series
        .iter()
        .map(|m| m.events.max(m.finished))
        .max()
        .unwrap_or(0)
        .max(1);
    let n = series.len().max(1) as f64;
    let plot_w = W - LEFT - 8.0;
    let plot_h = H - TOP - BOTTOM;
    let step = plot_w / n;
    let y = |v: i64| TOP + plot_h - (v as f64 / top as f64) * plot_h;
    let line: Vec<String> = series
        .iter()
        .enumerate()
        .map(|(i, m)| format!("{:.1},{:.1}", LEFT + step * (i as f64 + 0.5), y(m.finished)))
        .collect();
    let total_events: i64 = series.iter().map(|m| m.events).sum();
    let total_finished: i64 = series.iter().map(|m| m.finished).sum();
    html! {
        svg.chart viewBox={"0 0 " (W) " " (H)} role="img"
            aria-label={"Throughput of the last hour: " (total_events) " events committed, " (total_finished) " jobs finished"} {
            line.axis x1=(LEFT) y1=(TOP + plot_h) x2=(W - 8.0) y2=(TOP + plot_h) {}
            line.grid x1=(LEFT) y1=(TOP) x2=(W - 8.0) y2=(TOP) {}
            text.label x=(LEFT - 4.0) y=(TOP + 4.0) text-anchor="end" { (top) }
            text.label x=(LEFT - 4.0) y=(TOP + plot_h) text-anchor="end" { "0" }
            @for (i, m) in series.iter().enumerate() {
                @let h = (m.events as f64 / top as f64) * plot_h;
                rect.events x=(format!("{:.1}", LEFT + step * i as f64 + 1.0)) y=(format!("{:.1}", TOP + plot_h - h))
                    width=(format!("{:.1}", (step - 2.0).max(1.0))) height=(format!("{:.1}", h)) {
                    title { (crate::clock::rfc3339(m.at_ms)) ": " (m.events) " events, " (m.finished) " jobs finished" }
                }
            }
            polyline.finished points=(line.join(" ")) {}
            text.label x=(LEFT) y=(H - 6.0) { "-60 min" }
            text.label x=(W - 8.0) y=(H - 6.0) text-anchor="end" { "now" }
        }
        p.legend {
            span.key.events {} " events committed per minute (" (total_events) " in the hour) "
            span.key.finished {} " jobs finished per minute (" (total_finished) ")"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_fills_empty_minutes_and_ends_now() {
        let now = 10 * 60_000 + 5_000;
        let pts = [
            Minute {
                at_ms: 9 * 60_000,
                events: 4,
                finished: 1,
            },
            Minute {
                at_ms: 2 * 60_000,
                events: 9,
                finished: 0,
            },
        ];
        let w = window(&pts, now, 5);
        assert_eq!(w.len(), 5);
        assert_eq!(w[0].at_ms, 6 * 60_000);
        assert_eq!(w[4].at_ms, 10 * 60_000);
        assert_eq!((w[3].events, w[3].finished), (4, 1));
        assert_eq!(
            w.iter().map(|m| m.events).sum::<i64>(),
            4,
            "older minutes are out"
        );
    }

    #[test]
    fn the_chart_has_a_bar_per_minute_and_scales_to_the_busiest() {
        let series: Vec<Minute> = (0..60)
            .map(|i| Minute {
                at_ms: i * 60_000,
                events: i,
                finished: i / 2,
            })
            .collect();
        let svg = throughput(&series).into_string();
        assert_eq!(svg.matches("<rect").count(), 60);
        assert!(
            svg.contains(">59</text>"),
            "the top label is the busiest minute"
        );
        assert!(svg.contains("1770 events committed"));
        let empty = throughput(&window(&[], 0, 60)).into_string();
        assert_eq!(empty.matches("<rect").count(), 60);
        assert!(!empty.contains("NaN"));
    }
}
