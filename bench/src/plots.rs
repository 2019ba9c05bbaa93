//! SVG plots beside the report (plotters' SVG backend writes text as <text>: no fonts).
use std::path::Path;

use plotters::prelude::*;

use crate::report::RSS_REST_MIB;
use crate::{FAILURE_THRESHOLD, INTERVAL_S, Results, sorted};

type AnyResult = anyhow::Result<()>;

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plotting: {e:?}")
}

pub fn write_all(dir: &Path, r: &Results) -> AnyResult {
    resources(&dir.join("resources.svg"), r)?;
    ready(&dir.join("ready.svg"), r)?;
    latency(&dir.join("latency.svg"), r)?;
    Ok(())
}

/// RSS and CPU of the operator over the run, with the phases marked.
fn resources(path: &Path, r: &Results) -> AnyResult {
    let root = SVGBackend::new(path, (1000, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (top, bottom) = root.split_vertically(320);
    let t_max = r.samples.last().map(|s| s.t).unwrap_or(1.0).max(1.0);
    let t_min = r.samples.first().map(|s| s.t).unwrap_or(0.0);
    let rss_max = r.samples.iter().map(|s| s.rss_mib).fold(RSS_REST_MIB, f64::max) * 1.15;
    let cpu_max = r.samples.iter().map(|s| s.cpu_pct).fold(5.0, f64::max) * 1.1;
    for (area, title, y_max, y_label, pick, budget) in [
        (&top, "operator RSS (MiB)", rss_max, "MiB", 0, Some(RSS_REST_MIB)),
        (&bottom, "operator CPU (% of one core)", cpu_max, "% of a core", 1, None),
    ] {
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(t_min..t_max, 0.0..y_max)
            .map_err(err)?;
        chart.configure_mesh().x_desc("seconds since the bench started").y_desc(y_label).draw().map_err(err)?;
        for (name, from, to) in &r.phases {
            if *to < t_min {
                continue;
            }
            let from = from.max(t_min);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(from, 0.0), (*to, y_max)],
                    RGBColor(230, 236, 245).mix(0.5).filled(),
                )))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(Text::new(name.clone(), (from, y_max * 0.97), ("sans-serif", 11))))
                .map_err(err)?;
        }
        let series: Vec<(f64, f64)> =
            r.samples.iter().map(|s| (s.t, if pick == 0 { s.rss_mib } else { s.cpu_pct })).collect();
        chart.draw_series(LineSeries::new(series, BLUE.stroke_width(2))).map_err(err)?;
        if let Some(b) = budget {
            chart
                .draw_series(LineSeries::new(vec![(t_min, b), (t_max, b)], RED.stroke_width(1)))
                .map_err(err)?
                .label(format!("budget at rest {b} MiB"))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
            chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw().map_err(err)?;
        }
    }
    root.present().map_err(err)?;
    Ok(())
}

/// Objects Ready over time: the operator's fleet against the controller-manager alone.
fn ready(path: &Path, r: &Results) -> AnyResult {
    let root = SVGBackend::new(path, (1000, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let t_max = r.fleet_ready_s.max(r.floor_ready_s).max(1.0) * 1.05;
    let n_max = r.fleet_curve.last().map(|c| c.1).unwrap_or(1).max(r.floor_curve.last().map(|c| c.1).unwrap_or(1));
    let mut chart = ChartBuilder::on(&root)
        .caption("Ready over time", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..t_max, 0.0..(n_max as f64 * 1.05))
        .map_err(err)?;
    chart.configure_mesh().x_desc("seconds since creation started").y_desc("Ready").draw().map_err(err)?;
    for (curve, color, label) in [
        (&r.fleet_curve, BLUE, "ColonyServers + FinanceBees (operator)"),
        (&r.floor_curve, GREEN, "Deployments alone (floor)"),
    ] {
        let pts: Vec<(f64, f64)> = curve.iter().map(|(t, n)| (*t, *n as f64)).collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// One latency panel: title, (label, values in ms, colour) per series, and a marked value.
type Panel<'a> = (&'a str, Vec<(&'a str, &'a Vec<f64>, RGBColor)>, Option<(f64, &'a str)>);

/// Cumulative distributions of the three latencies.
fn latency(path: &Path, r: &Results) -> AnyResult {
    let root = SVGBackend::new(path, (1000, 960)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let areas = root.split_evenly((3, 1));
    let due = FAILURE_THRESHOLD as f64 * INTERVAL_S * 1000.0;
    let panels: [Panel; 3] = [
        (
            "Secret change → new pod template (CDF)",
            vec![
                ("operator: new pod-template hash", &r.secret_latency_ms, BLUE),
                ("floor: a bare watch client sees the Secret", &r.secret_floor_ms, GREEN),
            ],
            None,
        ),
        (
            "first failed probe → fallback ConfigMap flip (CDF)",
            vec![("operator", &r.flip_latency_ms, BLUE)],
            Some((due, "failureThreshold × interval")),
        ),
        ("pod Failed → pod deleted (CDF)", vec![("operator", &r.restart_latency_ms, BLUE)], None),
    ];
    for (area, (title, series, mark)) in areas.iter().zip(panels) {
        let x_max =
            series.iter().flat_map(|(_, v, _)| v.iter().copied()).fold(mark.map(|m| m.0).unwrap_or(1.0), f64::max)
                * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..x_max, 0.0..1.0)
            .map_err(err)?;
        chart.configure_mesh().x_desc("milliseconds").y_desc("fraction").draw().map_err(err)?;
        for (label, values, color) in series {
            let v = sorted(values.clone());
            let n = v.len().max(1) as f64;
            let pts: Vec<(f64, f64)> = v.iter().enumerate().map(|(i, x)| (*x, (i + 1) as f64 / n)).collect();
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .map_err(err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        if let Some((x, label)) = mark {
            chart
                .draw_series(LineSeries::new(vec![(x, 0.0), (x, 1.0)], RED.stroke_width(1)))
                .map_err(err)?
                .label(label)
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .border_style(BLACK)
            .background_style(WHITE)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}
