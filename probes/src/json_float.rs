//! Floats that JSON cannot hold. serde_json writes NaN and ±∞ as `null` but refuses to read
//! `null` back into an `f64`, so a result with "no value" cells (NaN) would save and then fail
//! to load. These read `null` as NaN; numbers read as before.

use serde::{Deserialize, Deserializer};

/// `null` → NaN.
pub fn f64_or_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// A matrix whose `null` entries read as NaN.
pub fn matrix_or_nan<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<f64>>, D::Error> {
    let rows = Vec::<Vec<Option<f64>>>::deserialize(d)?;
    Ok(rows.into_iter().map(|r| r.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect()).collect())
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    struct Cells {
        #[serde(deserialize_with = "super::matrix_or_nan")]
        m: Vec<Vec<f64>>,
        #[serde(deserialize_with = "super::f64_or_nan")]
        x: f64,
    }

    #[test]
    fn nan_and_infinity_written_as_null_read_back_as_nan() {
        let json = serde_json::to_string(&Cells { m: vec![vec![0.5, f64::NAN], vec![f64::INFINITY, -1.0]], x: f64::NAN }).unwrap();
        assert_eq!(json, r#"{"m":[[0.5,null],[null,-1.0]],"x":null}"#);
        let back: Cells = serde_json::from_str(&json).unwrap();
        assert_eq!(back.m[0][0], 0.5);
        assert!(back.m[0][1].is_nan() && back.m[1][0].is_nan() && back.x.is_nan());
        assert_eq!(back.m[1][1], -1.0);
    }
}
