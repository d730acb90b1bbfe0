//! `--plot`: the simulation as an SVG, one row per service: each backend's share of the
//! flows beside its ideal share, and what each removal or addition would move beside the
//! least it could.

use std::path::Path;

use anyhow::anyhow;
use plotters::{coord::Shift, prelude::*};

use super::{ChangeKind, ServiceSpread};

const ROW_HEIGHT: u32 = 360;
const WIDTH: u32 = 1100;
const BAR: RGBColor = RGBColor(0x3b, 0x6e, 0xa8);
const IDEAL: RGBColor = RGBColor(0xc0, 0x39, 0x2b);

/// One bar chart: a bar per label with a horizontal mark at its ideal value. Values are
/// fractions, drawn as percentages.
pub fn bars_with_ideal<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    labels: &[String],
    values: &[f64],
    ideals: &[f64],
    y_desc: &str,
) -> anyhow::Result<()> {
    let n = labels.len().max(1) as i32;
    let top = values
        .iter()
        .chain(ideals)
        .fold(0.0f64, |m, v| m.max(*v * 100.0))
        .max(1.0)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d((0..n).into_segmented(), 0.0..top)
        .map_err(|e| anyhow!("drawing {title}: {e:?}"))?;
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
        .map_err(|e| anyhow!("drawing {title}: {e:?}"))?;
    chart
        .draw_series(
            Histogram::vertical(&chart)
                .style(BAR.filled())
                .margin(6)
                .data(
                    values
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (i as i32, v * 100.0)),
                ),
        )
        .map_err(|e| anyhow!("drawing {title}: {e:?}"))?
        .label("measured")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], BAR.filled()));
    chart
        .draw_series(ideals.iter().enumerate().map(|(i, v)| {
            PathElement::new(
                vec![
                    (SegmentValue::Exact(i as i32), v * 100.0),
                    (SegmentValue::Exact(i as i32 + 1), v * 100.0),
                ],
                IDEAL.stroke_width(3),
            )
        }))
        .map_err(|e| anyhow!("drawing {title}: {e:?}"))?
        .label("ideal")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], IDEAL.stroke_width(3)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("drawing {title}: {e:?}"))?;
    Ok(())
}

/// Draws `spreads` into an SVG file at `path`.
pub fn plot(spreads: &[ServiceSpread], path: &Path) -> anyhow::Result<()> {
    let rows = spreads.len().max(1) as u32;
    let root = SVGBackend::new(path, (WIDTH, ROW_HEIGHT * rows)).into_drawing_area();
    root.fill(&WHITE)
        .map_err(|e| anyhow!("drawing {}: {e:?}", path.display()))?;
    let areas = root.split_evenly((rows as usize, 1));
    for (spread, area) in spreads.iter().zip(&areas) {
        let title = format!(
            "{}: share of {} random flows per backend (M = {})",
            spread.name, spread.flows, spread.maglev_size
        );
        let labels: Vec<String> = spread
            .backends
            .iter()
            .map(|b| format!("{} (w {})", b.address, b.weight))
            .collect();
        let shares: Vec<f64> = spread.backends.iter().map(|b| b.share).collect();
        let ideals: Vec<f64> = spread.backends.iter().map(|b| b.ideal).collect();
        if spread.changes.is_empty() {
            bars_with_ideal(
                area,
                &title,
                &labels,
                &shares,
                &ideals,
                "share of flows (%)",
            )?;
            continue;
        }
        let (left, right) = area.split_horizontally(WIDTH * 3 / 5);
        bars_with_ideal(
            &left,
            &title,
            &labels,
            &shares,
            &ideals,
            "share of flows (%)",
        )?;
        let labels: Vec<String> = spread
            .changes
            .iter()
            .map(|c| match c.kind {
                ChangeKind::Remove => format!("- {}", c.address),
                ChangeKind::Add => format!("+ {}", c.address),
            })
            .collect();
        let moved: Vec<f64> = spread.changes.iter().map(|c| c.moved).collect();
        let ideal: Vec<f64> = spread.changes.iter().map(|c| c.ideal).collect();
        bars_with_ideal(
            &right,
            &format!("{}: flows moved", spread.name),
            &labels,
            &moved,
            &ideal,
            "share of flows moved (%)",
        )?;
    }
    root.present()
        .map_err(|e| anyhow!("writing {}: {e:?}", path.display()))?;
    Ok(())
}
