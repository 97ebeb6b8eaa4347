use super::*;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

/// A random `[n, k]` matrix quantized by candle (llama.cpp's rounding), its blocks as bytes.
fn blocks(ty: BlockType, n: usize, k: usize, seed: u64) -> (Vec<u8>, Vec<f32>) {
    let dtype = match ty {
        BlockType::Q8_0 => GgmlDType::Q8_0,
        BlockType::Q4K => GgmlDType::Q4K,
        BlockType::Q6K => GgmlDType::Q6K,
    };
    let vals = crate::test_values::values(n * k, seed);
    let w = Tensor::from_vec(vals, (n, k), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&w, dtype).unwrap();
    let deq = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    (q.data().unwrap().to_vec(), deq)
}

fn matrix(ty: BlockType, n: usize, k: usize, seed: u64) -> (BlockMatrix, Vec<f32>) {
    let (bytes, deq) = blocks(ty, n, k, seed);
    let len = bytes.len();
    (BlockMatrix::new(ty, n, k, Arc::new(bytes), 0..len).unwrap(), deq)
}

const TYPES: [BlockType; 3] = [BlockType::Q8_0, BlockType::Q4K, BlockType::Q6K];

#[test]
fn dequantisation_matches_candle() {
    // candle's own dequantisation (a separate implementation of llama.cpp's formats).
    for ty in TYPES {
        let (m, deq) = matrix(ty, 5, 512, 1);
        assert_eq!(m.dequantize(), deq, "{ty:?}");
    }
}

#[test]
fn products_match_dequantised_weights() {
    // Against f64 products with the dequantised weights: the only difference is the
    // activations' 8-bit rounding, a relative error of about 2^-8 per value, far less over a
    // sum of k products of random sign.
    for ty in TYPES {
        for (m, n, k) in [(1, 7, 256), (3, 16, 512), (4, 33, 1024), (9, 5, 768), (5, 3, 96)] {
            if k % ty.block_values() != 0 {
                continue;
            }
            let (w, deq) = matrix(ty, n, k, 2);
            let x = crate::test_values::values(m * k, 3);
            let mut y = vec![f32::NAN; m * n];
            w.matmul_t(&x, m, &mut y);
            let mut worst = 0f64;
            let mut scale = 0f64;
            for r in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k).map(|i| x[r * k + i] as f64 * deq[j * k + i] as f64).sum();
                    worst = worst.max((y[r * n + j] as f64 - want).abs());
                    scale = scale.max(want.abs());
                }
            }
            assert!(worst < 0.01 * scale, "{ty:?} [{m},{n},{k}]: error {worst} against largest {scale}");
        }
    }
}

#[test]
fn vector_kernels_sum_like_scalar_ones() {
    if !vector_kernels() {
        eprintln!("no AVX-512 VNNI here: the vector kernels are not exercised");
        return;
    }
    for (ty, k) in TYPES.iter().map(|&t| (t, 1024)).chain([(BlockType::Q8_0, 96)]) {
        let (m, n) = (7, 9);
        let (w, _) = matrix(ty, n, k, 4);
        let x = crate::test_values::values(m * k, 5);
        let mut y = vec![0f32; m * n];
        w.matmul_t(&x, m, &mut y);
        let xq = activations::quantize(ty, &x, m, k);
        let rb = w.row_bytes();
        for r in 0..m {
            for j in 0..n {
                let s = scalar::dot(ty, &w.data()[j * rb..(j + 1) * rb], &xq, r);
                let v = y[r * n + j];
                assert!((v - s).abs() <= 1e-4 * s.abs().max(1.0), "{ty:?} ({r}, {j}): vector {v}, scalar {s}");
            }
        }
    }
}

#[test]
fn sizes_that_disagree_are_refused() {
    let bytes: Bytes = Arc::new(vec![0u8; 144]);
    assert!(BlockMatrix::new(BlockType::Q4K, 1, 256, bytes.clone(), 0..144).is_ok());
    assert!(BlockMatrix::new(BlockType::Q4K, 2, 256, bytes.clone(), 0..144).is_err());
    assert!(BlockMatrix::new(BlockType::Q4K, 1, 200, bytes.clone(), 0..144).is_err());
    assert!(BlockMatrix::new(BlockType::Q4K, 1, 256, bytes, 100..244).is_err());
}
