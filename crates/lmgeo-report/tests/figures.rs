//! Figures render to valid SVG and PNG that show the data they were given,
//! and bad data gives a note or an error, never a panic or garbage.

mod common;

use common::{attr, check_svg, decode_png, elements, hex, svg_texts};
use lmgeo_report::*;

// The first three colours of the series palette (Okabe–Ito).
const BLUE: (u8, u8, u8) = (0, 114, 178);
const ORANGE: (u8, u8, u8) = (213, 94, 0);
const GREEN: (u8, u8, u8) = (0, 158, 115);

fn line_plot(series: Vec<Series>) -> LinePlot {
    LinePlot {
        title: "Entropy per layer".into(),
        x_label: "layer".into(),
        y_label: "entropy".into(),
        x_log: false,
        y_log: false,
        series,
    }
}

fn ramp(n: usize, slope: f64) -> Vec<(f64, f64)> {
    (0..n).map(|i| (i as f64, 1.0 + slope * i as f64)).collect()
}

/// Polylines drawn in `colour` with the series' stroke width.
fn series_lines(svg: &str, colour: (u8, u8, u8)) -> usize {
    let stroke = format!("stroke=\"{}\"", hex(colour));
    elements(svg, "polyline", &[&stroke, "stroke-width=\"2\""]).len()
}

fn markers(svg: &str, colour: (u8, u8, u8)) -> usize {
    let fill = format!("fill=\"{}\"", hex(colour));
    elements(svg, "circle", &[&fill]).len()
}

#[test]
fn line_plot_draws_every_series_in_svg_and_png() {
    let fig = Figure::from(line_plot(vec![
        Series::line("pythia-70m", ramp(7, 0.1)),
        Series::line("pythia-160m", ramp(13, 0.05)).with_style(SeriesStyle::Points),
        Series::line("pythia-410m", ramp(25, 0.02)).with_style(SeriesStyle::LineAndPoints),
    ]));
    let r = fig.render().unwrap();
    assert_eq!((r.width, r.height), DEFAULT_SIZE);
    assert!(r.notes.is_empty(), "{:?}", r.notes);

    let names = check_svg(&r.svg);
    assert!(names.contains(&"text".to_string()));
    let texts = svg_texts(&r.svg);
    for t in [
        "Entropy per layer",
        "layer",
        "entropy",
        "pythia-70m",
        "pythia-160m",
        "pythia-410m",
    ] {
        assert!(texts.iter().any(|x| x == t), "missing text {t:?}");
    }
    // One polyline per drawn line plus one per legend swatch line.
    assert_eq!(series_lines(&r.svg, BLUE), 1 + 1);
    assert_eq!(series_lines(&r.svg, ORANGE), 0);
    assert_eq!(series_lines(&r.svg, GREEN), 1 + 1);
    // One marker per point plus one in the legend, for marker styles only.
    assert_eq!(markers(&r.svg, BLUE), 0);
    assert_eq!(markers(&r.svg, ORANGE), 13 + 1);
    assert_eq!(markers(&r.svg, GREEN), 25 + 1);

    let img = decode_png(&r.png);
    assert_eq!((img.width, img.height), DEFAULT_SIZE);
    assert!(img.distinct_colours() > 20, "PNG looks blank");
    for c in [BLUE, ORANGE, GREEN] {
        assert!(img.count(c) > 50, "series colour {c:?} barely drawn in PNG");
    }
}

#[test]
fn series_past_the_palette_are_dashed() {
    let series = |n: usize| -> Vec<Series> {
        (0..n)
            .map(|i| Series::line(format!("s{i}"), ramp(10, i as f64)))
            .collect()
    };
    let ten = Figure::from(line_plot(series(10))).render().unwrap();
    // Series 0 and its legend line, both solid.
    assert_eq!(series_lines(&ten.svg, BLUE), 2);
    // Series 10 reuses blue, dashed: many short pieces, not one line.
    let eleven = Figure::from(line_plot(series(11))).render().unwrap();
    let blue = series_lines(&eleven.svg, BLUE);
    assert!(blue > 2 + 10, "{blue} blue pieces");
    assert!(eleven.notes.is_empty());
    let many = Figure::from(line_plot(series(21))).render().unwrap();
    assert!(
        many.notes.iter().any(|n| n.contains("repeat")),
        "{:?}",
        many.notes
    );
}

#[test]
fn x_ticks_follow_the_data_range() {
    let r = Figure::from(line_plot(vec![Series::line("a", ramp(25, 0.02))]))
        .render()
        .unwrap();
    let texts = svg_texts(&r.svg);
    for t in ["0", "5", "10", "15", "20"] {
        assert!(
            texts.iter().any(|x| x == t),
            "missing x tick {t}: {texts:?}"
        );
    }
    assert!(
        !texts.iter().any(|x| x == "30"),
        "tick beyond the data range"
    );
}

#[test]
fn band_is_drawn_as_one_polygon_per_stretch() {
    let pts = ramp(10, 0.1);
    let band = pts.iter().map(|&(x, y)| (x, y - 0.1, y + 0.1)).collect();
    let r = Figure::from(line_plot(vec![Series::line("random", pts).with_band(band)]))
        .render()
        .unwrap();
    let polys = elements(&r.svg, "polygon", &[&format!("fill=\"{}\"", hex(BLUE))]);
    assert_eq!(polys.len(), 1);
    // Upper edge forward, lower edge back: two vertices per band entry.
    assert_eq!(attr(polys[0], "points").split_whitespace().count(), 20);
    // The legend shows band and line.
    assert_eq!(series_lines(&r.svg, BLUE), 2);
}

#[test]
fn band_with_one_usable_entry_is_still_visible() {
    let band = vec![(0.0, 0.5, 1.5), (1.0, f64::NAN, 2.0)];
    let r = Figure::from(line_plot(vec![
        Series::line("seeds", vec![(0.0, 1.0), (1.0, 1.5)]).with_band(band),
    ]))
    .render()
    .unwrap();
    assert!(r.notes[0].contains("1 band entry dropped"), "{:?}", r.notes);
    let bar = elements(
        &r.svg,
        "polyline",
        &[&format!("stroke=\"{}\"", hex(BLUE)), "stroke-width=\"8\""],
    );
    assert_eq!(bar.len(), 1);
}

#[test]
fn unordered_points_are_drawn_in_x_order() {
    let r = Figure::from(line_plot(vec![Series::line(
        "shuffled",
        vec![(3.0, 1.0), (1.0, 2.0), (2.0, 3.0), (0.0, 4.0)],
    )]))
    .render()
    .unwrap();
    let line = elements(&r.svg, "polyline", &[&format!("stroke=\"{}\"", hex(BLUE))])
        .into_iter()
        .max_by_key(|t| t.len())
        .unwrap();
    let xs: Vec<i32> = attr(line, "points")
        .split_whitespace()
        .map(|p| p.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(xs.len(), 4);
    assert!(xs.windows(2).all(|w| w[0] < w[1]), "{xs:?}");
}

#[test]
fn nan_points_are_dropped_break_the_line_and_are_noted() {
    let mut pts = ramp(10, 0.1);
    pts[4].1 = f64::NAN;
    pts[7].0 = f64::INFINITY;
    let r = Figure::from(line_plot(vec![Series::line("gappy", pts)]))
        .render()
        .unwrap();
    assert_eq!(r.notes.len(), 1, "{:?}", r.notes);
    assert!(r.notes[0].contains("gappy") && r.notes[0].contains("2 NaN/infinite points"));
    // The note is printed under the title.
    assert!(
        svg_texts(&r.svg)
            .iter()
            .any(|t| t.contains("2 NaN/infinite"))
    );
    // Two stretches (0-3 and 5-9 without 7) plus the legend line.
    assert_eq!(series_lines(&r.svg, BLUE), 2 + 1);
    check_svg(&r.svg);
}

#[test]
fn a_single_point_gets_a_marker_and_a_valid_range() {
    let r = Figure::from(line_plot(vec![Series::line("one", vec![(30.0, 0.5)])]))
        .render()
        .unwrap();
    check_svg(&r.svg);
    // A one-point line would be invisible: it is drawn as a marker (and
    // the legend shows one too).
    assert_eq!(markers(&r.svg, BLUE), 1 + 1);
    // x ticks lie near 30, so labels below 1 are y ticks around 0.5.
    let y_ticks: Vec<f64> = svg_texts(&r.svg)
        .iter()
        .filter_map(|t| t.parse().ok())
        .filter(|&v: &f64| v.abs() < 1.0)
        .collect();
    assert!(
        y_ticks.iter().any(|&v| v < 0.5) && y_ticks.iter().any(|&v| v > 0.5),
        "{y_ticks:?}"
    );
    assert!(decode_png(&r.png).count(BLUE) > 20);
}

#[test]
fn constant_series_still_has_ticks_around_its_value() {
    let r = Figure::from(line_plot(vec![Series::line(
        "flat",
        (0..5).map(|i| (i as f64, 2.0)).collect(),
    )]))
    .render()
    .unwrap();
    let numeric: Vec<f64> = svg_texts(&r.svg)
        .iter()
        .filter_map(|t| t.parse().ok())
        .collect();
    assert!(numeric.iter().any(|&v| v > 2.0 && v < 2.5), "{numeric:?}");
    assert!(numeric.iter().any(|&v| v < 2.0 && v > 1.5), "{numeric:?}");
}

#[test]
fn empty_input_is_an_error() {
    let err = Figure::from(line_plot(vec![])).render().unwrap_err();
    assert!(matches!(err, FigureError::NoData { .. }), "{err}");
    let err = Figure::from(line_plot(vec![
        Series::line("ok", ramp(3, 1.0)),
        Series::line("empty", vec![]),
    ]))
    .render()
    .unwrap_err();
    match err {
        FigureError::EmptySeries { series, .. } => assert_eq!(series, "empty"),
        e => panic!("unexpected {e}"),
    }
    let all_nan = Series::line("nan", vec![(f64::NAN, 1.0), (1.0, f64::NAN)]);
    let err = Figure::from(line_plot(vec![all_nan])).render().unwrap_err();
    assert!(matches!(err, FigureError::NothingToPlot { .. }), "{err}");
}

#[test]
fn log_axis_drops_non_positive_values_with_a_note() {
    let mut plot = line_plot(vec![Series::line(
        "ig",
        vec![(1.0, 2.0), (2.0, 0.0), (3.0, 0.5), (4.0, -1.0), (5.0, 0.1)],
    )]);
    plot.y_log = true;
    let r = Figure::from(plot.clone()).render().unwrap();
    assert_eq!(r.notes.len(), 1);
    assert!(
        r.notes[0].contains("2 points with y ≤ 0 (log y axis)"),
        "{:?}",
        r.notes
    );
    // Three stretches of one point each: each a marker, no line; the
    // legend shows a marker too.
    assert_eq!(markers(&r.svg, BLUE), 3 + 1);
    assert_eq!(series_lines(&r.svg, BLUE), 1);
    check_svg(&r.svg);

    plot.series[0].points = vec![(1.0, 0.0), (2.0, -3.0)];
    let err = Figure::from(plot).render().unwrap_err();
    assert!(matches!(err, FigureError::NothingToPlot { .. }), "{err}");
}

#[test]
fn log_axis_over_decades_is_labelled_in_powers_of_ten() {
    let mut plot = line_plot(vec![Series::line(
        "N",
        vec![(1.4e7, 0.7), (4.1e8, 0.6), (1.2e10, 0.55)],
    )]);
    plot.x_log = true;
    let r = Figure::from(plot).render().unwrap();
    let texts = svg_texts(&r.svg);
    for t in ["10⁸", "10⁹", "10¹⁰"] {
        assert!(texts.iter().any(|x| x == t), "missing {t}: {texts:?}");
    }
    // No raw float formatting leaks into the labels.
    assert!(!texts.iter().any(|x| x.contains("00000")), "{texts:?}");
}

#[test]
fn log_axis_within_one_decade_still_has_labels() {
    // x from 10 to 20, so any label between 0.3 and 0.85 is a y tick.
    let mut plot = line_plot(vec![Series::line("h", vec![(10.0, 0.32), (20.0, 0.81)])]);
    plot.y_log = true;
    let r = Figure::from(plot).render().unwrap();
    let y_ticks: Vec<f64> = svg_texts(&r.svg)
        .iter()
        .filter_map(|t| t.parse().ok())
        .filter(|&v| v > 0.3 && v < 0.85)
        .collect();
    assert!(y_ticks.len() >= 2, "no y tick labels on a short log axis");
}

#[test]
fn legend_avoids_the_data() {
    // Data in the lower-left and upper-right corners: the legend should take
    // the upper left, not its default upper right.
    let pts = vec![(0.0, 0.0), (0.5, 0.3), (9.0, 9.0), (9.5, 9.6), (10.0, 10.0)];
    let r = Figure::from(line_plot(vec![
        Series::line("corners", pts).with_style(SeriesStyle::Points),
    ]))
    .render()
    .unwrap();
    let label = elements(&r.svg, "text", &[])
        .into_iter()
        .zip(svg_texts(&r.svg))
        .find(|(_, t)| t == "corners")
        .map(|(tag, _)| tag)
        .expect("legend label");
    let x: i32 = attr(label, "x").parse().unwrap();
    let y: i32 = attr(label, "y").parse().unwrap();
    assert!(x < 450 && y < 280, "legend at ({x}, {y})");
}

#[test]
fn user_text_is_escaped_in_svg() {
    let mut plot = line_plot(vec![Series::line("<b>A & B</b>", ramp(3, 1.0))]);
    plot.title = "<script>alert(1)</script> & \"quotes\"\nnewline".into();
    let r = Figure::from(plot).render().unwrap();
    check_svg(&r.svg);
    assert!(!r.svg.contains("<script"));
    assert!(!r.svg.contains("<b>"));
    let texts = svg_texts(&r.svg);
    assert!(
        texts
            .iter()
            .any(|t| t == "<script>alert(1)</script> & \"quotes\" newline")
    );
}

#[test]
fn too_small_a_canvas_is_an_error() {
    let err = Figure::from(line_plot(vec![Series::line("a", ramp(3, 1.0))]))
        .render_sized(100, 50)
        .unwrap_err();
    assert!(matches!(err, FigureError::TooSmall { .. }), "{err}");
    let r = Figure::from(line_plot(vec![Series::line("a", ramp(3, 1.0))]))
        .render_sized(640, 400)
        .unwrap();
    let img = decode_png(&r.png);
    assert_eq!((img.width, img.height), (640, 400));
    assert!(r.svg.contains("viewBox=\"0 0 640 400\""));
}

fn scaling(points: Vec<LabeledPoint>, fit: Option<PowerLawFit>) -> ScatterFit {
    ScatterFit {
        title: "Entropy against size".into(),
        x_label: "parameters".into(),
        y_label: "entropy".into(),
        log_log: true,
        points,
        fit,
    }
}

fn pythia() -> Vec<LabeledPoint> {
    [
        ("pythia-70m", 7e7),
        ("pythia-160m", 1.6e8),
        ("pythia-410m", 4.1e8),
        ("pythia-1b", 1e9),
        ("pythia-2.8b", 2.8e9),
    ]
    .iter()
    .enumerate()
    .map(|(i, &(name, n))| LabeledPoint {
        x: n,
        y: 2.0 * f64::powf(n, -0.12) * (1.0 + 0.02 * (i as f64 - 2.0)),
        y_err: Some(0.005),
        label: name.into(),
    })
    .collect()
}

const FIT: PowerLawFit = PowerLawFit {
    a: 2.0,
    b: -0.12,
    r2: 0.97,
    b_ci: Some((-0.15, -0.09)),
};

#[test]
fn scatter_fit_shows_points_labels_fit_and_its_numbers() {
    let r = Figure::from(scaling(pythia(), Some(FIT))).render().unwrap();
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    check_svg(&r.svg);
    // Five points plus the legend marker.
    assert_eq!(markers(&r.svg, BLUE), 5 + 1);
    let texts = svg_texts(&r.svg);
    for p in pythia() {
        assert!(texts.contains(&p.label), "missing label {}", p.label);
    }
    let legend = texts
        .iter()
        .find(|t| t.starts_with("fit"))
        .expect("fit legend");
    assert!(
        legend.contains("b = -0.12") && legend.contains("R² = 0.97"),
        "{legend}"
    );
    assert!(
        texts.iter().any(|t| t.contains("[-0.15, -0.09]")),
        "CI of b missing: {texts:?}"
    );
    // Fitted curve and its legend line.
    assert_eq!(series_lines(&r.svg, ORANGE), 2);
    // Error bars: a stem and two caps per point.
    let bars = elements(
        &r.svg,
        "polyline",
        &[&format!("stroke=\"{}\"", hex(BLUE)), "stroke-width=\"1\""],
    );
    assert_eq!(bars.len(), 5 * 3);
    let img = decode_png(&r.png);
    assert!(img.count(BLUE) > 200 && img.count(ORANGE) > 100);
}

#[test]
fn ci_band_pivots_at_the_geometric_mean_of_x() {
    let r = Figure::from(scaling(pythia(), Some(FIT))).render().unwrap();
    let band = elements(&r.svg, "polygon", &[&format!("fill=\"{}\"", hex(ORANGE))]);
    assert_eq!(band.len(), 1);
    let pts: Vec<(f64, f64)> = attr(band[0], "points")
        .split_whitespace()
        .map(|p| {
            let (x, y) = p.split_once(',').unwrap();
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect();
    let half = pts.len() / 2;
    let (upper, lower) = pts.split_at(half);
    let narrowest = upper
        .iter()
        .zip(lower.iter().rev())
        .min_by(|a, b| {
            let wa = (a.0.1 - a.1.1).abs();
            let wb = (b.0.1 - b.1.1).abs();
            wa.total_cmp(&wb)
        })
        .unwrap();
    // On a log x axis the geometric mean of x sits at the mean pixel of the
    // points (the circles, less the legend marker, which is drawn last).
    let circles = elements(&r.svg, "circle", &[&format!("fill=\"{}\"", hex(BLUE))]);
    let cx: Vec<f64> = circles[..5]
        .iter()
        .map(|c| attr(c, "cx").parse().unwrap())
        .collect();
    let mean = cx.iter().sum::<f64>() / cx.len() as f64;
    assert!(
        (narrowest.0.0 - mean).abs() <= 4.0,
        "band narrowest at x = {}, geometric mean at {mean}",
        narrowest.0.0
    );
    // ... and it has some width elsewhere.
    let widest = upper
        .iter()
        .zip(lower.iter().rev())
        .map(|(u, l)| (u.1 - l.1).abs())
        .fold(0.0, f64::max);
    assert!(widest > 10.0);
}

#[test]
fn scatter_drops_bad_points_by_name() {
    let mut pts = pythia();
    pts[0].y = f64::NAN;
    pts[1].x = 0.0;
    pts[2].y_err = Some(10.0); // reaches below zero on the log axis
    let r = Figure::from(scaling(pts, Some(FIT))).render().unwrap();
    let all = r.notes.join(" | ");
    assert!(all.contains("NaN") && all.contains("pythia-70m"), "{all}");
    assert!(
        all.contains("log-log") && all.contains("pythia-160m"),
        "{all}"
    );
    assert!(
        all.contains("cut at the axis") && all.contains("pythia-410m"),
        "{all}"
    );
    assert_eq!(markers(&r.svg, BLUE), 3 + 1);
    check_svg(&r.svg);
}

#[test]
fn an_undrawable_fit_is_noted_not_drawn() {
    let bad = PowerLawFit { a: -1.0, ..FIT };
    let r = Figure::from(scaling(pythia(), Some(bad))).render().unwrap();
    assert!(
        r.notes.iter().any(|n| n.contains("fit not drawn")),
        "{:?}",
        r.notes
    );
    assert_eq!(series_lines(&r.svg, ORANGE), 0);
    let nan = PowerLawFit { b: f64::NAN, ..FIT };
    let r = Figure::from(scaling(pythia(), Some(nan))).render().unwrap();
    assert!(r.notes.iter().any(|n| n.contains("fit not drawn")));
}

#[test]
fn scatter_with_one_point_and_no_fit() {
    let r = Figure::from(scaling(pythia()[..1].to_vec(), None))
        .render()
        .unwrap();
    check_svg(&r.svg);
    assert_eq!(markers(&r.svg, BLUE), 1 + 1);
    let err = Figure::from(scaling(vec![], Some(FIT)))
        .render()
        .unwrap_err();
    assert!(matches!(err, FigureError::NoData { .. }));
}

fn heatmap(values: Vec<Vec<f64>>) -> Heatmap {
    Heatmap {
        title: "Distances".into(),
        x_label: "text".into(),
        y_label: "text".into(),
        row_labels: vec![],
        col_labels: vec![],
        values,
        color_label: "Bures distance".into(),
        symmetric: false,
        normalize_rows: false,
    }
}

const VIRIDIS_LOW: (u8, u8, u8) = (0x44, 0x01, 0x54);
const VIRIDIS_HIGH: (u8, u8, u8) = (0xFD, 0xE7, 0x25);
const NAN_GREY: (u8, u8, u8) = (200, 200, 200);

#[test]
fn heatmap_cells_take_the_colours_of_their_values() {
    let r = Figure::from(heatmap(vec![vec![0.0, 1.0], vec![f64::NAN, 0.5]]))
        .render()
        .unwrap();
    check_svg(&r.svg);
    assert_eq!(r.notes, vec!["1 of 4 cells are NaN/infinite (drawn grey)"]);
    let img = decode_png(&r.png);
    // Each cell is a quarter of the plot, far more than the colour bar's
    // share of any one colour.
    for c in [VIRIDIS_LOW, VIRIDIS_HIGH, NAN_GREY] {
        assert!(img.count(c) > 20_000, "{c:?}: {}", img.count(c));
    }
    // Values are printed in cells this large.
    let texts = svg_texts(&r.svg);
    for t in ["0", "1", "0.5", "NaN", "Bures distance"] {
        assert!(texts.iter().any(|x| x == t), "missing {t:?}");
    }
}

#[test]
fn symmetric_heatmap_is_centred_on_zero() {
    let mut h = heatmap(vec![vec![-2.0, 1.0]]);
    h.symmetric = true;
    let img = decode_png(&Figure::from(h).render().unwrap().png);
    // -2 is the bottom of [-2, 2]; 1 sits at 3/4 of it, which is a stop of
    // the RdBu map.
    assert!(img.count((0x21, 0x66, 0xAC)) > 20_000);
    assert!(img.count((0xF4, 0xA5, 0x82)) > 20_000);
}

#[test]
fn heatmap_rows_are_normalised_on_request() {
    let mut h = heatmap(vec![vec![0.0, 0.01], vec![0.0, 100.0]]);
    h.normalize_rows = true;
    let r = Figure::from(h).render().unwrap();
    assert!(r.notes.iter().any(|n| n.contains("row")));
    // Both row maxima get the top colour: two cells' worth of pixels.
    let img = decode_png(&r.png);
    assert!(
        img.count(VIRIDIS_HIGH) > 2 * 20_000,
        "{}",
        img.count(VIRIDIS_HIGH)
    );
}

#[test]
fn token_labels_show_whitespace_and_are_shortened() {
    let mut h = heatmap(vec![vec![0.1, 0.2, 0.3], vec![0.3, 0.2, 0.1]]);
    h.row_labels = vec!["Lasso |β|".into(), "attention".into()];
    h.col_labels = vec![
        "\n\nHuman".into(),
        " the".into(),
        "antidisestablishmentarianism".into(),
    ];
    let r = Figure::from(h).render().unwrap();
    let texts = svg_texts(&r.svg);
    for t in ["↵↵Human", "·the", "Lasso |β|", "attention"] {
        assert!(texts.iter().any(|x| x == t), "missing {t:?} in {texts:?}");
    }
    assert!(
        texts
            .iter()
            .any(|x| x.starts_with("antidis") && x.ends_with('…'))
    );
    check_svg(&r.svg);
}

#[test]
fn many_columns_thin_their_labels() {
    let n = 300;
    let mut h = heatmap(vec![(0..n).map(|i| i as f64).collect()]);
    h.col_labels = (0..n).map(|i| format!("t{i}")).collect();
    let r = Figure::from(h).render().unwrap();
    let shown = svg_texts(&r.svg)
        .iter()
        .filter(|t| t.starts_with('t') && t[1..].parse::<u32>().is_ok())
        .count();
    assert!(shown > 10 && shown < n / 2, "{shown} of {n} labels drawn");
}

#[test]
fn heatmap_shape_errors() {
    let err = Figure::from(heatmap(vec![vec![1.0, 2.0], vec![3.0]]))
        .render()
        .unwrap_err();
    assert!(matches!(err, FigureError::Shape { .. }), "{err}");
    let mut h = heatmap(vec![vec![1.0, 2.0]]);
    h.col_labels = vec!["only one".into()];
    let err = Figure::from(h).render().unwrap_err();
    assert!(
        err.to_string().contains("1 column labels for 2 columns"),
        "{err}"
    );
    let err = Figure::from(heatmap(vec![])).render().unwrap_err();
    assert!(matches!(err, FigureError::NoData { .. }));
    let err = Figure::from(heatmap(vec![vec![f64::NAN]]))
        .render()
        .unwrap_err();
    assert!(matches!(err, FigureError::NothingToPlot { .. }));
}

#[test]
fn constant_heatmap_is_one_colour_with_a_note() {
    let r = Figure::from(heatmap(vec![vec![3.0; 3]; 3]))
        .render()
        .unwrap();
    assert!(r.notes.iter().any(|n| n.contains("all values equal 3")));
    check_svg(&r.svg);
}

fn auc(bars: Vec<Bar>) -> BarChart {
    BarChart {
        title: "ROC AUC per distance".into(),
        y_label: "AUC".into(),
        bars,
        reference: Some((0.5, "chance".into())),
    }
}

#[test]
fn bar_chart_draws_bars_error_bars_values_and_reference() {
    let r = Figure::from(auc(vec![
        ("Frobenius".into(), 0.61, Some((0.55, 0.67))),
        ("Bures".into(), 0.74, Some((0.80, 0.70))), // bounds in either order
        ("von Neumann relative entropy".into(), 0.83, None),
    ]))
    .render()
    .unwrap();
    check_svg(&r.svg);
    let bars = elements(&r.svg, "rect", &[&format!("fill=\"{}\"", hex(BLUE))]);
    assert_eq!(bars.len(), 3);
    // Heights ordered like the values.
    let h: Vec<i32> = bars
        .iter()
        .map(|b| attr(b, "height").parse().unwrap())
        .collect();
    assert!(h[0] < h[1] && h[1] < h[2], "{h:?}");
    let error_bars = elements(
        &r.svg,
        "polyline",
        &["stroke=\"#000000\"", "stroke-width=\"2\""],
    );
    assert_eq!(error_bars.len(), 2 * 3);
    let texts = svg_texts(&r.svg);
    for t in ["0.61", "0.74", "0.83", "chance (0.5)", "Frobenius", "AUC"] {
        assert!(texts.iter().any(|x| x == t), "missing {t:?} in {texts:?}");
    }
    // Bars start at zero.
    assert!(texts.iter().any(|x| x == "0.0"));
    // The long name is wrapped, not cut.
    assert!(texts.iter().any(|x| x.contains("entropy")));
    let img = decode_png(&r.png);
    assert!(img.count(BLUE) > 10_000);
}

#[test]
fn bar_chart_with_missing_values() {
    let r = Figure::from(auc(vec![
        ("a".into(), f64::NAN, None),
        ("b".into(), -0.2, Some((f64::NAN, 0.0))),
    ]))
    .render()
    .unwrap();
    let all = r.notes.join(" | ");
    assert!(all.contains("n/a: a"), "{all}");
    assert!(
        all.contains("error bar not drawn") && all.contains(": b"),
        "{all}"
    );
    assert!(svg_texts(&r.svg).iter().any(|t| t == "n/a"));
    assert_eq!(
        elements(&r.svg, "rect", &[&format!("fill=\"{}\"", hex(BLUE))]).len(),
        1
    );

    let err = Figure::from(auc(vec![])).render().unwrap_err();
    assert!(matches!(err, FigureError::NoData { .. }));
    let err = Figure::from(auc(vec![("x".into(), f64::INFINITY, None)]))
        .render()
        .unwrap_err();
    assert!(matches!(err, FigureError::NothingToPlot { .. }));
}

#[test]
fn figures_round_trip_through_json() {
    let fig = Figure::from(scaling(pythia(), Some(FIT)));
    let json = serde_json::to_string(&fig).unwrap();
    let back: Figure = serde_json::from_str(&json).unwrap();
    assert_eq!(back, fig);
}

#[test]
fn square_matrices_get_square_cells() {
    let cells = |h: Heatmap| -> Vec<(i32, i32)> {
        let r = Figure::from(h).render().unwrap();
        // Cells are the filled rects without a stroke, larger than the
        // colour bar's thin slices.
        elements(&r.svg, "rect", &["stroke=\"none\""])
            .iter()
            .map(|t| {
                (
                    attr(t, "width").parse().unwrap(),
                    attr(t, "height").parse().unwrap(),
                )
            })
            .filter(|&(w, h): &(i32, i32)| w > 20 && h > 20 && w < 800)
            .collect()
    };
    let square = cells(heatmap(vec![vec![0.0, 1.0, 2.0, 3.0, 4.0]; 5]));
    assert_eq!(square.len(), 25);
    assert!(
        square.iter().all(|&(w, h)| (w - h).abs() <= 1),
        "{square:?}"
    );
    // A wide matrix fills the width instead.
    let wide = cells(heatmap(vec![vec![0.0, 1.0, 2.0, 3.0, 4.0]; 2]));
    assert_eq!(wide.len(), 10);
    assert!(wide.iter().all(|&(w, h)| w != h));
}

#[test]
fn huge_matrices_are_drawn_as_block_means() {
    let n = 1000;
    let mut values: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| if i / 500 == j / 500 { 0.0 } else { 1.0 })
                .collect()
        })
        .collect();
    values[3][3] = f64::NAN;
    let r = Figure::from(heatmap(values)).render().unwrap();
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("1000×1000") && n.contains("5×5 blocks")),
        "{:?}",
        r.notes
    );
    // 200 x 200 blocks, not a million cells.
    let cells = elements(&r.svg, "rect", &["stroke=\"none\""]).len();
    assert!(cells <= 200 * 200 + 300, "{cells} rects");
    assert!(r.svg.len() < 10_000_000, "{} bytes of SVG", r.svg.len());
    // The block structure survives: the two diagonal blocks are the low
    // colour, the off-diagonal ones the high colour, in equal shares.
    let img = decode_png(&r.png);
    let (low, high) = (img.count(VIRIDIS_LOW), img.count(VIRIDIS_HIGH));
    assert!(low > 20_000 && high > 20_000, "{low} {high}");
    assert!((low as f64 / high as f64 - 1.0).abs() < 0.1, "{low} {high}");
}
