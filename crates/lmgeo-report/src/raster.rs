//! The PNG backend: plotters' bitmap backend with text drawn by us.
//!
//! plotters 0.3.7 rasterises ab_glyph text ignoring each glyph's side
//! bearing, so narrow glyphs shift and leave gaps ("41 0m" for "410m"), and
//! it sizes and anchors text differently from its own SVG output. Here text
//! is laid out with the font's advances and kerning and placed the way the
//! SVG backend asks a browser to place it, so both files look alike.
//! Everything else is passed to the bitmap backend unchanged.

use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use plotters::prelude::*;
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind, FontTransform,
    text_anchor::{HPos, VPos},
};

use crate::chrome::DEJAVU_SANS;

/// plotters' SVG backend writes `font-size = size / 1.24`; the same em size
/// is used here.
const SIZE_TO_EM: f64 = 1.0 / 1.24;
/// Baseline offsets below the anchor, in em, matching the SVG backend's
/// `dy` of 0.76em (top), 0.5ex (centre) and -0.5ex (bottom), with DejaVu
/// Sans' x-height of 0.547em for the ex.
const BASELINE_TOP: f64 = 0.76;
const HALF_EX: f64 = 0.5 * 0.547;

fn dejavu() -> Option<&'static FontRef<'static>> {
    static FONT: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FONT.get_or_init(|| FontRef::try_from_slice(DEJAVU_SANS).ok())
        .as_ref()
}

pub(crate) struct PngBackend<'a> {
    inner: BitMapBackend<'a>,
}

impl<'a> PngBackend<'a> {
    pub(crate) fn new(rgb: &'a mut [u8], size: (u32, u32)) -> Self {
        PngBackend {
            inner: BitMapBackend::with_buffer(rgb, size),
        }
    }
}

type BitmapError<'a> = <BitMapBackend<'a> as DrawingBackend>::ErrorType;

/// Rotates an offset from the text anchor the way SVG's `rotate(deg)` does
/// (clockwise on screen, y pointing down).
fn rotate(t: &FontTransform, x: f64, y: f64) -> (f64, f64) {
    match t {
        FontTransform::Rotate90 => (-y, x),
        FontTransform::Rotate180 => (-x, -y),
        FontTransform::Rotate270 => (y, -x),
        _ => (x, y),
    }
}

impl<'a> DrawingBackend for PngBackend<'a> {
    type ErrorType = BitmapError<'a>;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_path(path, style)
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.fill_polygon(vert, style)
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        (iw, ih): (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.blit_bitmap(pos, (iw, ih), src)
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let color = style.color();
        if color.alpha == 0.0 || text.is_empty() {
            return Ok(());
        }
        let Some(font) = dejavu() else {
            // Without the font, plotters' own text drawing is the fallback.
            return self.inner.draw_text(text, style, pos);
        };
        let em = style.size() * SIZE_TO_EM;
        let units = f64::from(font.units_per_em().unwrap_or(2048.0));
        let scale = PxScale::from((em * f64::from(font.height_unscaled()) / units) as f32);
        let scaled = font.as_scaled(scale);

        let mut glyphs = Vec::with_capacity(text.len());
        let mut pen = 0f32;
        let mut prev = None;
        for c in text.chars() {
            let id = scaled.glyph_id(c);
            if let Some(p) = prev {
                pen += scaled.kern(p, id);
            }
            glyphs.push(id.with_scale_and_position(scale, point(pen, 0.0)));
            pen += scaled.h_advance(id);
            prev = Some(id);
        }
        let width = f64::from(pen);
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0.0,
            HPos::Center => -width / 2.0,
            HPos::Right => -width,
        };
        let baseline = em
            * match anchor.v_pos {
                VPos::Top => BASELINE_TOP,
                VPos::Center => HALF_EX,
                VPos::Bottom => -HALF_EX,
            };
        let transform = style.transform();
        let mut pixels: Vec<(i32, i32, f32)> = Vec::new();
        for g in glyphs {
            if let Some(outline) = font.outline_glyph(g) {
                let b = outline.px_bounds();
                outline.draw(|gx, gy, coverage| {
                    let ux = f64::from(b.min.x) + f64::from(gx) + dx;
                    let uy = f64::from(b.min.y) + f64::from(gy) + baseline;
                    let (rx, ry) = rotate(&transform, ux, uy);
                    pixels.push((
                        pos.0 + rx.round() as i32,
                        pos.1 + ry.round() as i32,
                        coverage,
                    ));
                });
            }
        }
        for (x, y, coverage) in pixels {
            if coverage > 0.0 {
                let c = BackendColor {
                    alpha: color.alpha * f64::from(coverage.min(1.0)),
                    rgb: color.rgb,
                };
                self.inner.draw_pixel((x, y), c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_matches_svg_convention() {
        // SVG rotate(270) turns a rightward offset into an upward one.
        assert_eq!(rotate(&FontTransform::Rotate270, 10.0, 0.0), (0.0, -10.0));
        assert_eq!(rotate(&FontTransform::Rotate90, 10.0, 0.0), (0.0, 10.0));
        assert_eq!(rotate(&FontTransform::None, 3.0, 4.0), (3.0, 4.0));
    }

    #[test]
    fn text_is_drawn_where_the_anchor_says() {
        let (w, h) = (120u32, 40u32);
        let mut rgb = vec![255u8; (w * h * 3) as usize];
        {
            let area = PngBackend::new(&mut rgb, (w, h)).into_drawing_area();
            let style = TextStyle::from(("sans-serif", 20).into_font())
                .color(&BLACK)
                .pos(plotters::style::text_anchor::Pos::new(
                    HPos::Left,
                    VPos::Top,
                ));
            area.draw(&Text::new("Wall", (10, 5), style)).unwrap();
            area.present().unwrap();
        }
        let dark = |x: u32, y: u32| rgb[((y * w + x) * 3) as usize] < 128;
        let ink: Vec<(u32, u32)> = (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .filter(|&(x, y)| dark(x, y))
            .collect();
        assert!(!ink.is_empty(), "no text pixels drawn");
        let min_x = ink.iter().map(|p| p.0).min().unwrap();
        let min_y = ink.iter().map(|p| p.1).min().unwrap();
        let max_x = ink.iter().map(|p| p.0).max().unwrap();
        // "W" starts at the anchor, within its side bearing.
        assert!((10..=12).contains(&min_x), "min_x = {min_x}");
        // Cap height: the top of the glyphs sits just below the anchor.
        assert!((5..=9).contains(&min_y), "min_y = {min_y}");
        // At em = 20 / 1.24 = 16.1 px, DejaVu's advances for "Wall" add up to
        // 2.16 em (34.8 px); the ink ends before the last side bearing.
        assert!(
            (28..=35).contains(&(max_x - min_x)),
            "width = {}",
            max_x - min_x
        );
    }
}
