//! CPU reference of `shaders/gelu.wgsl`: GELU in its tanh form (the activation of the optional
//! feed-forward block), evaluated in f64 and rounded once, like the rest of the references.

/// sqrt(2 / pi).
const C: f64 = 0.797_884_560_802_865_4;
const A: f64 = 0.044715;
/// The shader clamps u to this (tanh is +-1 to f32 precision beyond it).
const U_MAX: f64 = 10.0;

/// tanh(u) and du/dx, with u clamped as in the shader (du/dx = 0 where the clamp holds).
fn tanh_u(x: f64) -> (f64, f64) {
    let u = C * (x + A * x * x * x);
    let du = if u.abs() < U_MAX {
        C * (1.0 + 3.0 * A * x * x)
    } else {
        0.0
    };
    (u.clamp(-U_MAX, U_MAX).tanh(), du)
}

/// gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
pub fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + tanh_u(x).0)
}

/// d gelu / dx (of the clamped form the shader computes).
pub fn gelu_grad(x: f64) -> f64 {
    let (t, du) = tanh_u(x);
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du
}

/// y = gelu(x), elementwise.
pub fn gelu_forward(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| gelu(v as f64) as f32).collect()
}

/// dx = dy * gelu'(x), elementwise (`x` is the forward's input).
pub fn gelu_backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
    assert_eq!(
        x.len(),
        dy.len(),
        "gelu_backward: x and dy differ in length"
    );
    x.iter()
        .zip(dy)
        .map(|(&v, &g)| (g as f64 * gelu_grad(v as f64)) as f32)
        .collect()
}
