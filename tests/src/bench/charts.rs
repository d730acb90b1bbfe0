//! The report's charts, drawn with plotters into SVG files under `tests/charts/`.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use plotters::{coord::Shift, prelude::*};

use super::{Bench, stats::Summary};

/// Where the charts go, relative to the repository root (the report links them from there).
pub const DIR: &str = "tests/charts";

const BAR: RGBColor = RGBColor(0x3b, 0x6e, 0xa8);
const MARK: RGBColor = RGBColor(0xc0, 0x39, 0x2b);
const SECOND: RGBColor = RGBColor(0x27, 0xa0, 0x5a);
const PALETTE: [RGBColor; 10] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];

fn err<E: std::fmt::Debug>(what: &str) -> impl Fn(E) -> anyhow::Error + '_ {
    move |e| anyhow!("drawing {what}: {e:?}")
}

/// A bar chart: a bar at each summary's median with a min–max whisker, and a red mark at
/// `marks[i]` where given (a target or an ideal).
pub struct Bars<'a> {
    pub title: &'a str,
    pub labels: &'a [String],
    pub values: &'a [Summary],
    pub marks: &'a [Option<f64>],
    pub mark_label: &'a str,
    pub y_desc: &'a str,
    pub legend: SeriesLabelPosition,
}

pub fn bars<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, spec: Bars<'_>) -> Result<()> {
    let Bars {
        title,
        labels,
        values,
        marks,
        mark_label,
        y_desc,
        legend,
    } = spec;
    let n = labels.len().max(1) as i32;
    let top = values
        .iter()
        .map(|v| v.max)
        .chain(marks.iter().flatten().copied())
        .fold(0.0f64, f64::max)
        .max(f64::MIN_POSITIVE)
        * 1.4;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        // A segmented 0..n has a segment for n itself: stop at the last bar.
        .build_cartesian_2d((0..(n - 1).max(1)).into_segmented(), 0.0..top)
        .map_err(err(title))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(labels.len())
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .y_desc(y_desc)
        .draw()
        .map_err(err(title))?;
    chart
        .draw_series(
            Histogram::vertical(&chart)
                .style(BAR.mix(0.8).filled())
                .margin(8)
                .data(values.iter().enumerate().map(|(i, v)| (i as i32, v.median))),
        )
        .map_err(err(title))?
        .label("median of the runs (whisker: min–max)")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], BAR.filled()));
    chart
        .draw_series(values.iter().enumerate().map(|(i, v)| {
            PathElement::new(
                vec![
                    (SegmentValue::CenterOf(i as i32), v.min),
                    (SegmentValue::CenterOf(i as i32), v.max),
                ],
                BLACK.stroke_width(2),
            )
        }))
        .map_err(err(title))?;
    if marks.iter().any(Option::is_some) {
        chart
            .draw_series(marks.iter().enumerate().filter_map(|(i, m)| {
                m.map(|m| {
                    PathElement::new(
                        vec![
                            (SegmentValue::Exact(i as i32), m),
                            (SegmentValue::Exact(i as i32 + 1), m),
                        ],
                        MARK.stroke_width(3),
                    )
                })
            }))
            .map_err(err(title))?
            .label(mark_label)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], MARK.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err(title))?;
    Ok(())
}

/// One line of a line chart.
pub struct Line {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
    /// Points only (no line), e.g. one backend's shares.
    pub points_only: bool,
}

pub fn lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    lines: &[Line],
    x_desc: &str,
    y_desc: &str,
    y_from_zero: bool,
) -> Result<()> {
    let all = lines.iter().flat_map(|l| &l.points);
    let (x0, x1) = all
        .clone()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = all.fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let pad = ((y1 - y0) * 0.1).max(1e-3);
    let y0 = if y_from_zero { 0.0 } else { y0 - pad };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((x0 - 0.5)..(x1 + 0.5), y0..(y1 + pad))
        .map_err(err(title))?;
    chart
        .configure_mesh()
        .x_label_formatter(&|x| format!("{x:.0}"))
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(err(title))?;
    for line in lines {
        let color = line.color;
        let series = if line.points_only {
            chart.draw_series(
                line.points
                    .iter()
                    .map(|p| Circle::new(*p, 3, color.filled())),
            )
        } else {
            chart.draw_series(LineSeries::new(line.points.clone(), color.stroke_width(2)))
        }
        .map_err(err(title))?;
        if !line.label.is_empty() {
            series.label(line.label.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 12, y)], color.stroke_width(3))
            });
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err(title))?;
    Ok(())
}

fn svg(
    root: &Path,
    name: &str,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<()>,
) -> Result<PathBuf> {
    let rel = Path::new(DIR).join(name);
    let path = root.join(&rel);
    {
        let area = SVGBackend::new(&path, size).into_drawing_area();
        area.fill(&WHITE).map_err(err(name))?;
        draw(&area)?;
        area.present().map_err(err(name))?;
    }
    Ok(rel)
}

/// Draws every chart; returns (name, path relative to `root`) for the report.
pub fn draw_all(bench: &Bench, root: &Path) -> Result<Vec<(String, PathBuf)>> {
    std::fs::create_dir_all(root.join(DIR))?;
    let mut out = Vec::new();
    let p = &bench.packet;
    out.push((
        "packet".to_owned(),
        svg(root, "packet-cost.svg", (1100, 480), |area| {
            let labels: Vec<String> = p.cases.iter().map(|c| c.id.clone()).collect();
            let nets: Vec<Summary> = p.cases.iter().map(|c| c.net_ns.clone()).collect();
            let marks: Vec<Option<f64>> = p
                .cases
                .iter()
                .map(|c| super::report::target_ns(&c.id))
                .collect();
            bars(
                area,
                Bars {
                    title: "Per-packet cost, net of the no-op XDP_TX program",
                    labels: &labels,
                    values: &nets,
                    marks: &marks,
                    mark_label: "target",
                    y_desc: "ns per packet",
                    legend: SeriesLabelPosition::UpperLeft,
                },
            )
        })?,
    ));
    let m = &bench.maglev;
    out.push((
        "maglev".to_owned(),
        svg(root, "maglev-build.svg", (1100, 420), |area| {
            let labels: Vec<String> = m
                .builds
                .iter()
                .map(|b| format!("M={} N={}", b.slots, b.backends))
                .collect();
            let values: Vec<Summary> = m.builds.iter().map(|b| b.ms.clone()).collect();
            let marks: Vec<Option<f64>> = m
                .builds
                .iter()
                .map(|b| {
                    (b.slots == 65_537 && b.backends == 100)
                        .then_some(super::report::BUILD_TARGET_MS)
                })
                .collect();
            bars(
                area,
                Bars {
                    title: "Maglev table build time",
                    labels: &labels,
                    values: &values,
                    marks: &marks,
                    mark_label: "target (65537 slots, 100 backends)",
                    y_desc: "ms",
                    legend: SeriesLabelPosition::UpperLeft,
                },
            )
        })?,
    ));
    let d = &bench.distribution;
    out.push((
        "spread".to_owned(),
        svg(root, "distribution-spread.svg", (1100, 440), |area| {
            let (left, right) = area.split_horizontally(600);
            let mut shares: Vec<Line> = Vec::new();
            for (i, color) in PALETTE.iter().enumerate() {
                let points: Vec<(f64, f64)> = d
                    .spreads
                    .iter()
                    .filter_map(|s| {
                        s.shares_percent.get(i).map(|v| {
                            (
                                f64::from(s.backends),
                                v.median * f64::from(s.backends) / 100.0,
                            )
                        })
                    })
                    .collect();
                shares.push(Line {
                    label: if i == 0 {
                        "each backend's share".to_owned()
                    } else {
                        String::new()
                    },
                    points,
                    color: *color,
                    points_only: true,
                });
            }
            shares.push(Line {
                label: "ideal (1/N of the flows)".to_owned(),
                points: d
                    .spreads
                    .iter()
                    .map(|s| (f64::from(s.backends), 1.0))
                    .collect(),
                color: MARK,
                points_only: false,
            });
            lines(
                &left,
                &format!("Each backend's share of {} random flows over 1/N", d.flows),
                &shares,
                "backends N",
                "share / ideal share",
                false,
            )?;
            let imbalance = vec![
                Line {
                    label: "max/mean (median of runs)".to_owned(),
                    points: d
                        .spreads
                        .iter()
                        .map(|s| (f64::from(s.backends), s.max_over_mean.median))
                        .collect(),
                    color: BAR,
                    points_only: false,
                },
                Line {
                    label: "max/mean (worst run)".to_owned(),
                    points: d
                        .spreads
                        .iter()
                        .map(|s| (f64::from(s.backends), s.max_over_mean.max))
                        .collect(),
                    color: MARK,
                    points_only: false,
                },
            ];
            lines(
                &right,
                "Imbalance",
                &imbalance,
                "backends N",
                "max share / mean share",
                false,
            )
        })?,
    ));
    out.push((
        "moved".to_owned(),
        svg(root, "distribution-moved.svg", (1100, 440), |area| {
            let series = |f: &dyn Fn(&super::distribution::Movement) -> f64| -> Vec<(f64, f64)> {
                d.movements
                    .iter()
                    .map(|mv| (f64::from(mv.backends), f(mv)))
                    .collect()
            };
            let moved = vec![
                Line {
                    label: "one of N removed: moved".to_owned(),
                    points: series(&|mv| mv.removed_percent.median),
                    color: BAR,
                    points_only: false,
                },
                Line {
                    label: "ideal 1/N".to_owned(),
                    points: series(&|mv| mv.remove_ideal_percent),
                    color: MARK,
                    points_only: false,
                },
                Line {
                    label: "one added to N: moved".to_owned(),
                    points: series(&|mv| mv.added_percent.median),
                    color: SECOND,
                    points_only: false,
                },
                Line {
                    label: "ideal 1/(N+1)".to_owned(),
                    points: series(&|mv| mv.add_ideal_percent),
                    color: PALETTE[1],
                    points_only: false,
                },
            ];
            lines(
                area,
                "Flows moved when one backend leaves or joins",
                &moved,
                "backends N before the change",
                "flows moved (%)",
                true,
            )
        })?,
    ));
    out.push((
        "weights".to_owned(),
        svg(root, "distribution-weights.svg", (1100, 400), |area| {
            let panels = area.split_evenly((1, d.weighted.len().max(1)));
            for (w, panel) in d.weighted.iter().zip(&panels) {
                let labels: Vec<String> = w.weights.iter().map(|x| format!("w {x}")).collect();
                let marks: Vec<Option<f64>> = w.ideal_percent.iter().map(|x| Some(*x)).collect();
                let title = format!("weights {:?}", w.weights);
                bars(
                    panel,
                    Bars {
                        title: &title,
                        labels: &labels,
                        values: &w.shares_percent,
                        marks: &marks,
                        mark_label: "ideal",
                        y_desc: "share of flows (%)",
                        legend: SeriesLabelPosition::UpperRight,
                    },
                )?;
            }
            Ok(())
        })?,
    ));
    Ok(out)
}
