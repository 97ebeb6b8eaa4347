use super::*;
use half::bf16;

use crate::test_values::values;

/// Every instruction set this CPU has, and the portable tiles.
fn all_kernels() -> Vec<Kernels> {
    let mut ks = vec![tile::SCALAR];
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            ks.push(Kernels { mr: 6, wide: 1, wide_rows: 0, f32: x86_avx2().0, bf16: x86_avx2().1, name: "avx2" });
        }
        if let Some(k) = x86::pick() {
            ks.push(k);
        }
    }
    ks
}

#[cfg(target_arch = "x86_64")]
fn x86_avx2() -> (tile::TileFn<f32>, tile::TileFn<u32>) {
    x86::avx2()
}

fn product(kern: Kernels, x: &[f32], t: usize, w: &PackedWeight) -> Vec<f32> {
    let mut y = vec![f32::NAN; t * w.out_dim()];
    run(kern, &[Product { x, t, w, y: Out(y.as_mut_ptr()) }]);
    y
}

/// Shapes that hit one-row and many-row tiles, a short last tile, a short last panel (under
/// and over 16 columns), several `k` blocks and a `k` block remainder.
const SHAPES: [(usize, usize, usize); 9] =
    [(1, 1, 1), (1, 31, 5), (1, 2048, 300), (3, 100, 129), (8, 64, 65), (2, 33, 1000), (13, 70, 67), (29, 600, 50), (40, 257, 24)];

/// Against a plain f64 sum over the same operands.
#[test]
fn matches_a_plain_sum_in_f64() {
    for (t, k, n) in SHAPES {
        let x = values(t * k, 1);
        let w = values(n * k, 2);
        let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        for bf in [false, true] {
            let packed = if bf { PackedWeight::from_bf16(&wb, n, k) } else { PackedWeight::from_f32(&w, n, k) };
            let mut y = vec![f32::NAN; t * n];
            matmul_t_slices(&x, t, &packed, &mut y);
            for i in 0..t {
                for j in 0..n {
                    let exact: f64 =
                        (0..k).map(|c| x[i * k + c] as f64 * if bf { wb[j * k + c].to_f64() } else { w[j * k + c] as f64 }).sum();
                    let got = y[i * n + j] as f64;
                    assert!(
                        (got - exact).abs() <= 1e-5 * (1.0 + k as f64).sqrt(),
                        "[{t}, {k}] x [{n}, {k}] bf16 {bf}: [{i},{j}] {got} vs {exact}"
                    );
                }
            }
        }
    }
}

/// The documented order, bit for bit: one fused multiply-add per step in increasing `k`, from
/// zero, on every instruction set.
#[test]
fn every_instruction_set_sums_in_the_documented_order() {
    let kernels = all_kernels();
    assert!(!kernels.is_empty());
    for (t, k, n) in SHAPES {
        let x = values(t * k, 3);
        let wb: Vec<bf16> = values(n * k, 4).into_iter().map(bf16::from_f32).collect();
        let w: Vec<f32> = wb.iter().map(|v| v.to_f32()).collect();
        let mut expected = vec![0f32; t * n];
        for i in 0..t {
            for j in 0..n {
                expected[i * n + j] = (0..k).fold(0f32, |acc, c| x[i * k + c].mul_add(w[j * k + c], acc));
            }
        }
        for packed in [PackedWeight::from_f32(&w, n, k), PackedWeight::from_bf16(&wb, n, k)] {
            for &kern in &kernels {
                let y = product(kern, &x, t, &packed);
                let same = y.iter().zip(&expected).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{} on [{t}, {k}] x {packed:?}", kern.name);
            }
        }
    }
}

/// A row's result does not depend on which other rows share the call (a prompt vs decode) nor
/// on how `k` is blocked for them.
#[test]
fn a_row_gets_the_same_bits_alone_and_among_others() {
    let (t, k, n) = (31, 700, 133);
    let x = values(t * k, 5);
    let w: Vec<bf16> = values(n * k, 6).into_iter().map(bf16::from_f32).collect();
    let packed = PackedWeight::from_bf16(&w, n, k);
    let mut all = vec![0f32; t * n];
    matmul_t_slices(&x, t, &packed, &mut all);
    for row in [0, 4, 30] {
        let mut one = vec![0f32; n];
        matmul_t_slices(&x[row * k..(row + 1) * k], 1, &packed, &mut one);
        assert_eq!(one, all[row * n..(row + 1) * n], "row {row}");
    }
}

#[test]
fn packing_round_trips() {
    for (n, k) in [(1, 1), (31, 7), (32, 5), (33, 64), (100, 3), (0, 4), (5, 0)] {
        let w = values(n * k, 7);
        let t = Tensor::from_vec(w.clone(), (n, k), &Device::Cpu).unwrap();
        let p = PackedWeight::pack(&t).unwrap();
        assert_eq!((p.out_dim(), p.in_dim(), p.dtype(), p.bytes()), (n, k, DType::F32, n * k * 4));
        assert_eq!(p.unpack().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), w);
        let tb = t.to_dtype(DType::BF16).unwrap();
        let pb = PackedWeight::pack(&tb).unwrap();
        assert_eq!(pb.dtype(), DType::BF16);
        assert_eq!(
            pb.unpack().unwrap().flatten_all().unwrap().to_vec1::<bf16>().unwrap(),
            tb.flatten_all().unwrap().to_vec1::<bf16>().unwrap()
        );
    }
    // The embedding lookup from a tied, packed head: the rows, widened to f32.
    let (n, k) = (70, 9);
    let t = Tensor::from_vec(values(n * k, 8), (n, k), &Device::Cpu).unwrap();
    let ids = [0u32, 69, 31, 32, 5, 31];
    let idx = Tensor::new(&ids, &Device::Cpu).unwrap();
    for w in [t.clone(), t.to_dtype(DType::BF16).unwrap()] {
        let want = w.index_select(&idx, 0).unwrap().to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let got = PackedWeight::pack(&w).unwrap().gather_rows(&ids).unwrap();
        assert_eq!(got.dims(), &[6, k]);
        assert_eq!(got.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
    }
    assert!(PackedWeight::pack(&t).unwrap().gather_rows(&[70]).unwrap_err().to_string().contains("row 70"));
    let f16 = Tensor::zeros((2, 2), DType::F16, &Device::Cpu).unwrap();
    assert!(PackedWeight::pack(&f16).unwrap_err().to_string().contains("f32 or bf16"));
}

#[test]
fn grouped_products_equal_the_products_one_by_one() {
    let d = Device::Cpu;
    let shapes = [(1, 48, 130), (3, 48, 7), (0, 48, 20), (5, 17, 64), (20, 300, 40)];
    let xs: Vec<Tensor> =
        shapes.iter().enumerate().map(|(i, &(t, k, _))| Tensor::from_vec(values(t * k, i as u64), (t, k), &d).unwrap()).collect();
    let ws: Vec<PackedWeight> = shapes
        .iter()
        .enumerate()
        .map(|(i, &(_, k, n))| {
            let w: Vec<bf16> = values(n * k, 10 + i as u64).into_iter().map(bf16::from_f32).collect();
            PackedWeight::from_bf16(&w, n, k)
        })
        .collect();
    let pairs: Vec<(&Tensor, &PackedWeight)> = xs.iter().zip(&ws).collect();
    let grouped = matmul_t_grouped(&pairs).unwrap();
    for ((x, w), g) in pairs.iter().zip(&grouped) {
        let alone = matmul_t(x, w).unwrap();
        assert_eq!(g.dims(), alone.dims());
        assert_eq!(g.flatten_all().unwrap().to_vec1::<f32>().unwrap(), alone.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
}

#[test]
fn the_op_agrees_with_candles_matmul_and_checks_its_inputs() {
    let d = Device::Cpu;
    let w = Tensor::from_vec(values(70 * 40, 4), (70, 40), &d).unwrap();
    let packed = PackedWeight::pack(&w).unwrap();
    for t in [1, 2, 45] {
        let x = Tensor::from_vec(values(t * 40, 3), (t, 40), &d).unwrap();
        let ours = matmul_t(&x, &packed).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let theirs = x.matmul(&w.t().unwrap()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(ours.len(), t * 70);
        for (a, b) in ours.iter().zip(&theirs) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        // A view at an offset into a larger tensor reads its own rows.
        let wide = Tensor::cat(&[&x, &x], 0).unwrap().narrow(0, t, t).unwrap();
        assert_eq!(matmul_t(&wide, &packed).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), ours);
    }
    let x = Tensor::from_vec(values(2 * 39, 3), (2, 39), &d).unwrap();
    assert!(matmul_t(&x, &packed).unwrap_err().to_string().contains("[70, 40]"));
    let x = Tensor::from_vec(values(2 * 40, 3), (2, 40), &d).unwrap();
    assert!(matmul_t(&x.to_dtype(DType::BF16).unwrap(), &packed).is_err());
    // An empty inner dimension sums nothing: zeros, not whatever the output memory held.
    let empty = PackedWeight::from_f32(&[], 5, 0);
    let y = matmul_t(&Tensor::zeros((3, 0), DType::F32, &d).unwrap(), &empty).unwrap();
    assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![0.0; 15]);
}

/// Attention's use: keys packed as rows, values packed transposed, causal prefixes of both,
/// batched over kv heads; against candle's matmul on the same operands.
#[test]
fn batched_products_on_prefixes_of_keys_and_transposed_values() {
    let d = Device::Cpu;
    let (b, t, dk, s) = (3, 7, 40, 70);
    let q = Tensor::from_vec(values(b * t * dk, 20), (b, t, dk), &d).unwrap();
    let keys = Tensor::from_vec(values(b * s * dk, 21), (b, s, dk), &d).unwrap();
    let vals = Tensor::from_vec(values(b * s * 33, 22), (b, s, 33), &d).unwrap();
    let kp: Vec<PackedWeight> = (0..b).map(|g| PackedWeight::pack(&keys.get(g).unwrap()).unwrap()).collect();
    let vp: Vec<PackedWeight> = (0..b)
        .map(|g| PackedWeight::from_f32_transposed(&vals.get(g).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), s, 33))
        .collect();
    let close = |a: &Tensor, b: &Tensor| {
        assert_eq!(a.dims(), b.dims());
        let (a, b) = (a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
    };
    for seen in [s, 41, 33, 1] {
        let prefixes: Vec<PackedWeight> = kp.iter().map(|w| w.prefix(seen, dk)).collect();
        let scores = matmul_t_batched(&q, &prefixes).unwrap();
        close(&scores, &q.matmul(&keys.narrow(1, 0, seen).unwrap().t().unwrap()).unwrap());
        let probs = Tensor::from_vec(values(b * t * seen, 23), (b, t, seen), &d).unwrap();
        let prefixes: Vec<PackedWeight> = vp.iter().map(|w| w.prefix(33, seen)).collect();
        let out = matmul_t_batched(&probs, &prefixes).unwrap();
        close(&out, &probs.matmul(&vals.narrow(1, 0, seen).unwrap()).unwrap());
    }
    assert!(matmul_t_batched(&q, &kp[..2]).is_err());
}
