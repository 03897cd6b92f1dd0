//! Shapes of the ops that the GPU side and the CPU reference share.

/// Sizes of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    /// Samples B.
    pub batch: usize,
    /// Tokens per sample T.
    pub tokens: usize,
    /// Heads H.
    pub heads: usize,
    /// Key (and value) dimension K of each head.
    pub key_dim: usize,
}

impl AttentionShape {
    /// Rows M = B*T.
    pub fn rows(&self) -> usize {
        self.batch * self.tokens
    }
    /// H*K: width of `o`, and of each of the Q, K, V blocks of `qkv`.
    pub fn hk(&self) -> usize {
        self.heads * self.key_dim
    }
    /// Elements of `qkv` (and `dqkv`): M * 3HK.
    pub fn qkv_len(&self) -> usize {
        self.rows() * 3 * self.hk()
    }
    /// Elements of `o` (and `d_o`): M * HK.
    pub fn o_len(&self) -> usize {
        self.rows() * self.hk()
    }
    /// Elements of `probs`: B * H * T * T.
    pub fn probs_len(&self) -> usize {
        self.batch * self.heads * self.tokens * self.tokens
    }
    /// 1 / sqrt(K).
    pub fn scale(&self) -> f64 {
        1.0 / (self.key_dim as f64).sqrt()
    }

    /// Threads per (sample, head) workgroup of the backward pass: the smallest power of two
    /// >= T, between 8 and 64.
    pub fn backward_workgroup(&self) -> u32 {
        (self.tokens.next_power_of_two() as u32).clamp(8, 64)
    }

    /// Loop iterations one invocation runs: (forward, backward), for the adapter's loop limit.
    pub fn loop_iterations(&self) -> (u64, u64) {
        let (t, k) = (self.tokens as u64, self.key_dim as u64);
        let forward = 2 * t * k + 3 * t + k;
        let rows = t.div_ceil(self.backward_workgroup() as u64);
        let backward = rows * (t * (4 * k + 2) + 3 * k);
        (forward, backward)
    }
}
