//! GPU buffers with a shape, and the program's one readback helper ([`Gpu::read`]).

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use wgpu::util::DeviceExt;

/// Usage of every storage tensor: bound to kernels, copied to and from.
pub const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// How a tensor's elements are stored: 4 bytes (f32, or u32 for labels and RNG state), or
/// IEEE half precision, 2 bytes (`--precision f16`: the weights and activations of a model
/// that samples). Shaders see the storage type of their activations as the alias `elem`
/// ([`Elem::wgsl_alias`]), and compute in f32 whatever it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Elem {
    #[default]
    F32,
    F16,
}

impl Elem {
    pub fn bytes(self) -> usize {
        match self {
            Elem::F32 => 4,
            Elem::F16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Elem::F32 => "f32",
            Elem::F16 => "f16",
        }
    }

    /// The lines in front of a shader that declare `elem` (with `enable f16;` for f16: it
    /// must come before any other declaration).
    pub fn wgsl_alias(self) -> &'static str {
        match self {
            Elem::F32 => "alias elem = f32;\n",
            Elem::F16 => "enable f16;\nalias elem = f16;\n",
        }
    }

    /// The storage type shared by `tensors` (the ones a kernel binds as `elem`), or an error
    /// naming the op and the odd one out.
    pub fn of(op: &str, tensors: &[&GpuTensor]) -> Result<Elem> {
        let first = tensors.first().map_or(Elem::F32, |t| t.elem);
        match tensors.iter().find(|t| t.elem != first) {
            Some(t) => Err(Error::gpu(format!(
                "{op}: tensor {} is {} beside {} tensors (its inputs and output share one storage type)",
                t.label,
                t.elem.name(),
                first.name()
            ))),
            None => Ok(first),
        }
    }
}

/// A range of a storage buffer with a logical shape: either a whole buffer, or a view into a
/// larger one (e.g. one parameter tensor of the flat parameter buffer that Adam updates in one
/// dispatch). Its elements are 4 bytes (f32 or u32) unless `elem` says f16.
#[derive(Clone, Debug)]
pub struct GpuTensor {
    pub buffer: wgpu::Buffer,
    /// First element of the range, in elements (its byte offset must satisfy the adapter's
    /// storage offset alignment to be bound).
    pub offset: usize,
    pub shape: Vec<usize>,
    pub label: String,
    pub elem: Elem,
}

impl GpuTensor {
    /// A zero-filled tensor of 4-byte elements.
    pub fn zeros(gpu: &Gpu, label: &str, shape: &[usize]) -> Result<GpuTensor> {
        Self::zeros_of(gpu, label, shape, Elem::F32)
    }

    /// A zero-filled tensor of `elem` elements (its buffer a whole number of 4-byte words).
    pub fn zeros_of(gpu: &Gpu, label: &str, shape: &[usize], elem: Elem) -> Result<GpuTensor> {
        let len: usize = shape.iter().product();
        let bytes = padded_bytes(len.max(1), elem);
        gpu.check_binding_size(label, bytes)?;
        let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: STORAGE,
            mapped_at_creation: false,
        });
        Ok(GpuTensor {
            buffer,
            offset: 0,
            shape: shape.to_vec(),
            label: label.to_string(),
            elem,
        })
    }

    /// A tensor holding `data` (f32 or u32), whose length must match `shape`.
    pub fn from_slice<T: bytemuck::Pod>(
        gpu: &Gpu,
        label: &str,
        shape: &[usize],
        data: &[T],
    ) -> Result<GpuTensor> {
        assert_eq!(std::mem::size_of::<T>(), 4, "tensors hold 4-byte elements");
        let len: usize = shape.iter().product();
        if data.len() != len {
            return Err(Error::gpu(format!(
                "tensor {label}: {} values for shape {shape:?}",
                data.len()
            )));
        }
        let bytes: &[u8] = bytemuck::cast_slice(data);
        gpu.check_binding_size(label, bytes.len() as u64)?;
        let buffer = if data.is_empty() {
            return Self::zeros(gpu, label, shape);
        } else {
            gpu.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: bytes,
                    usage: STORAGE,
                })
        };
        Ok(GpuTensor {
            buffer,
            offset: 0,
            shape: shape.to_vec(),
            label: label.to_string(),
            elem: Elem::F32,
        })
    }

    /// A tensor holding `data` stored as `elem` (f32 values rounded to nearest f16 by the
    /// `half` crate for f16).
    pub fn from_values(
        gpu: &Gpu,
        label: &str,
        shape: &[usize],
        data: &[f32],
        elem: Elem,
    ) -> Result<GpuTensor> {
        if elem == Elem::F32 {
            return Self::from_slice(gpu, label, shape, data);
        }
        let len: usize = shape.iter().product();
        if data.len() != len {
            return Err(Error::gpu(format!(
                "tensor {label}: {} values for shape {shape:?}",
                data.len()
            )));
        }
        let t = Self::zeros_of(gpu, label, shape, elem)?;
        t.write_values(gpu, data);
        Ok(t)
    }

    /// Bytes packed four to a u32 word (e.g. 8-bit images), zero-padded to a whole word.
    pub fn from_bytes(gpu: &Gpu, label: &str, bytes: &[u8]) -> Result<GpuTensor> {
        let words = bytes.len().div_ceil(4);
        let mut packed = vec![0u32; words];
        bytemuck::cast_slice_mut::<u32, u8>(&mut packed)[..bytes.len()].copy_from_slice(bytes);
        if cfg!(target_endian = "big") {
            for w in &mut packed {
                *w = w.swap_bytes();
            }
        }
        Self::from_slice(gpu, label, &[words], &packed)
    }

    /// A view of `shape` starting `offset` elements into this tensor.
    pub fn view(&self, label: &str, offset: usize, shape: &[usize]) -> GpuTensor {
        let len: usize = shape.iter().product();
        assert!(
            offset + len <= self.len(),
            "view {label} [{offset}, +{len}) outside {} of {} elements",
            self.label,
            self.len()
        );
        GpuTensor {
            buffer: self.buffer.clone(),
            offset: self.offset + offset,
            shape: shape.to_vec(),
            label: label.to_string(),
            elem: self.elem,
        }
    }

    /// First byte of the range.
    pub fn byte_offset(&self) -> u64 {
        (self.offset * self.elem.bytes()) as u64
    }

    /// The binding of this range, for [`Gpu::dispatch`]: a whole number of 4-byte words (an
    /// f16 range of odd length takes the next element too, which no kernel reads: buffers
    /// and parameter views are padded to whole words).
    pub fn bind(&self) -> wgpu::BindingResource<'_> {
        let bytes = padded_bytes(self.len().max(1), self.elem);
        let size = bytes.min(self.buffer.size() - self.byte_offset());
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.byte_offset(),
            size: std::num::NonZeroU64::new(size),
        })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Overwrites the contents with `data` (same length; a 4-byte tensor).
    pub fn write<T: bytemuck::Pod>(&self, gpu: &Gpu, data: &[T]) {
        assert_eq!(data.len(), self.len(), "write to {}", self.label);
        assert_eq!(
            std::mem::size_of::<T>(),
            self.elem.bytes(),
            "write to {}",
            self.label
        );
        gpu.queue.write_buffer(
            &self.buffer,
            (self.offset * 4) as u64,
            bytemuck::cast_slice(data),
        );
    }

    /// Overwrites the contents with `data` (same length) converted to the tensor's storage.
    pub fn write_values(&self, gpu: &Gpu, data: &[f32]) {
        assert_eq!(data.len(), self.len(), "write to {}", self.label);
        match self.elem {
            Elem::F32 => self.write(gpu, data),
            Elem::F16 => {
                let mut words: Vec<half::f16> =
                    data.iter().map(|&v| half::f16::from_f32(v)).collect();
                // write_buffer takes whole 4-byte words.
                if words.len() % 2 == 1 {
                    words.push(half::f16::ZERO);
                }
                gpu.queue.write_buffer(
                    &self.buffer,
                    self.byte_offset(),
                    bytemuck::cast_slice(&words),
                );
            }
        }
    }

    /// Reads the values back as f32 whatever their storage (waits for the GPU; for tests and
    /// checks).
    pub fn read_values(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        match self.elem {
            Elem::F32 => self.read(gpu),
            Elem::F16 => {
                let v: Vec<half::f16> = gpu.read(&self.buffer, self.offset, self.len())?;
                Ok(v.iter().map(|h| h.to_f32()).collect())
            }
        }
    }

    /// Reads the tensor back (waits for the GPU). For tests, checkpoints and final results:
    /// never inside a hot loop.
    pub fn read<T: bytemuck::Pod>(&self, gpu: &Gpu) -> Result<Vec<T>> {
        gpu.read::<T>(&self.buffer, self.offset, self.len())
    }

    /// [`GpuTensor::read`] as a future, for a browser page, where nothing may block.
    pub async fn read_async<T: bytemuck::Pod>(&self, gpu: &Gpu) -> Result<Vec<T>> {
        gpu.read_async::<T>(&self.buffer, self.offset, self.len())
            .await
    }
}

/// Bytes of a buffer of `len` elements of `elem`: a whole number of 4-byte words.
fn padded_bytes(len: usize, elem: Elem) -> u64 {
    ((len * elem.bytes()).div_ceil(4) * 4) as u64
}

impl Gpu {
    /// The one readback helper: copies `count` elements of `T` starting at element `offset`
    /// of `buffer` into a staging buffer, waits, and returns them (blocks; native only, a page
    /// awaits [`Gpu::read_async`]).
    pub fn read<T: bytemuck::Pod>(
        &self,
        buffer: &wgpu::Buffer,
        offset: usize,
        count: usize,
    ) -> Result<Vec<T>> {
        pollster::block_on(self.read_async(buffer, offset, count))
    }

    /// [`Gpu::read`] as a future. A native device runs the mapping callback while it is
    /// polled (here, to completion); a browser runs it when its promise settles.
    pub async fn read_async<T: bytemuck::Pod>(
        &self,
        buffer: &wgpu::Buffer,
        offset: usize,
        count: usize,
    ) -> Result<Vec<T>> {
        let size = std::mem::size_of::<T>();
        match self.snapshot(buffer, (offset * size) as u64, (count * size) as u64) {
            Some(s) => Ok(bytemuck::pod_collect_to_vec(&s.read().await?)),
            None => Ok(vec![]),
        }
    }

    /// `bytes` bytes of `buffer` from byte `offset`, copied aside at this point of the queue
    /// (later dispatches do not change them), to be read by [`Snapshot::read`]; None when
    /// there is nothing to copy.
    pub fn snapshot(&self, buffer: &wgpu::Buffer, offset: u64, bytes: u64) -> Option<Snapshot<'_>> {
        if bytes == 0 {
            return None;
        }
        self.readbacks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let padded = bytes.div_ceil(4) * 4;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: padded,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("readback"),
            });
        enc.copy_buffer_to_buffer(buffer, offset, &staging, 0, padded);
        self.queue.submit([enc.finish()]);
        Some(Snapshot {
            gpu: self,
            staging,
            bytes,
        })
    }

    /// A small uniform buffer holding `value` (kernel parameters), made once per dispatch.
    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, value: &T) -> wgpu::Buffer {
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::bytes_of(value),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            })
    }

    /// Errors (naming the tensor and the limit) when a buffer cannot be bound as storage.
    pub fn check_binding_size(&self, label: &str, bytes: u64) -> Result<()> {
        let max = self.limits.max_storage_buffer_binding_size;
        let max_buf = self.limits.max_buffer_size;
        if bytes > max.min(max_buf) {
            return Err(Error::adapter(format!(
                "{label}: {:.1} MiB, over {} max_storage_buffer_binding_size of {:.1} MiB by {:.1} MiB",
                bytes as f64 / 1048576.0,
                self.limits_choice.owner(),
                max.min(max_buf) as f64 / 1048576.0,
                (bytes - max.min(max_buf)) as f64 / 1048576.0
            )));
        }
        Ok(())
    }
}

/// A copy of part of a buffer taken at one point of the queue ([`Gpu::snapshot`]).
pub struct Snapshot<'a> {
    gpu: &'a Gpu,
    staging: wgpu::Buffer,
    bytes: u64,
}

impl Snapshot<'_> {
    /// The copied bytes, once the GPU has written them.
    pub async fn read(self) -> Result<Vec<u8>> {
        let slice = self.staging.slice(..);
        let (tx, rx) = crate::gpu::signal::oneshot();
        slice.map_async(wgpu::MapMode::Read, move |r| tx.send(r));
        #[cfg(not(target_arch = "wasm32"))]
        self.gpu.wait()?;
        rx.await
            .ok_or_else(|| Error::gpu("readback callback never ran"))?
            .map_err(|e| Error::gpu(format!("readback failed: {e}")))?;
        #[cfg(target_arch = "wasm32")]
        self.gpu.check()?;
        let out = slice
            .get_mapped_range()
            .map_err(|e| Error::gpu(format!("readback mapping failed: {e}")))?
            [..self.bytes as usize]
            .to_vec();
        self.staging.unmap();
        Ok(out)
    }
}
