//! GPU buffers with a shape, and the program's one readback helper ([`Gpu::read`]).

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use wgpu::util::DeviceExt;

/// Usage of every storage tensor: bound to kernels, copied to and from.
pub const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// A range of a storage buffer of 4-byte elements (f32 or u32) with a logical shape: either a
/// whole buffer, or a view into a larger one (e.g. one parameter tensor of the flat parameter
/// buffer that Adam updates in one dispatch).
#[derive(Clone, Debug)]
pub struct GpuTensor {
    pub buffer: wgpu::Buffer,
    /// First element of the range, in elements (its byte offset must satisfy the adapter's
    /// storage offset alignment to be bound).
    pub offset: usize,
    pub shape: Vec<usize>,
    pub label: String,
}

impl GpuTensor {
    /// A zero-filled tensor.
    pub fn zeros(gpu: &Gpu, label: &str, shape: &[usize]) -> Result<GpuTensor> {
        let len: usize = shape.iter().product();
        let bytes = (len.max(1) * 4) as u64;
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
        })
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
        }
    }

    /// The binding of this range, for [`Gpu::dispatch`].
    pub fn bind(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: (self.offset * 4) as u64,
            size: std::num::NonZeroU64::new((self.len().max(1) * 4) as u64),
        })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Overwrites the contents with `data` (same length).
    pub fn write<T: bytemuck::Pod>(&self, gpu: &Gpu, data: &[T]) {
        assert_eq!(data.len(), self.len(), "write to {}", self.label);
        gpu.queue.write_buffer(
            &self.buffer,
            (self.offset * 4) as u64,
            bytemuck::cast_slice(data),
        );
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
