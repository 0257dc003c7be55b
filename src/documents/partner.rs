//! Documents for the Vietnamese partner API.
//!
//! The partner owns the schema of phiếu nhập (goods receipt), phiếu xuất
//! (goods issue) and hóa đơn (sales invoice) and changes it without notice,
//! so only the document code is checked here: it is what the partner uses to
//! deduplicate, and a blank code would create duplicates on every retry.
//! Everything else passes through untouched.

use serde_json::Value;

use super::{expect_code, expect_object, required, Problems};

/// Longest document code the partner accepts.
const CODE_MAX: usize = 100;

pub(super) fn validate(problems: &mut Problems, payload: &Value, code_field: &'static str) {
    let Some(root) = problems.take(expect_object(payload, "")) else {
        return;
    };
    problems.take(
        required(root, "", code_field).and_then(|code| expect_code(code, code_field, CODE_MAX)),
    );
}

#[cfg(test)]
mod tests {
    use crate::documents::{DocumentError, DocumentKind, Problem};
    use serde_json::json;

    fn only(err: DocumentError) -> Problem {
        assert_eq!(err.problems.len(), 1, "{err}");
        err.problems.into_iter().next().unwrap()
    }

    #[test]
    fn receipt_and_issue_need_invoice_code() {
        for kind in [
            DocumentKind::PartnerPhieuNhap,
            DocumentKind::PartnerPhieuXuat,
        ] {
            let ok =
                json!({ "invoiceCode": "PN-0001", "khoNhap": "Kho Hà Nội", "items": [1, "x"] });
            assert_eq!(kind.validate(&ok), Ok(()));

            let err = kind.validate(&json!({ "billCode": "HD-1" })).unwrap_err();
            assert_eq!(err.document, kind.name());
            let err = only(err);
            assert_eq!(err.field, "invoiceCode");
            assert_eq!(err.problem, "missing required field");

            let err = only(
                kind.validate(&json!({ "invoiceCode": " \t " }))
                    .unwrap_err(),
            );
            assert_eq!(err.problem, "must not be empty");

            let err = only(kind.validate(&json!({ "invoiceCode": 12 })).unwrap_err());
            assert_eq!(err.problem, "expected a string, got number");
        }
    }

    #[test]
    fn sales_invoice_needs_bill_code() {
        let kind = DocumentKind::PartnerHoaDon;
        assert_eq!(kind.validate(&json!({ "billCode": "HĐ-2026-01" })), Ok(()));
        let err = kind.validate(&json!({ "invoiceCode": "X" })).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid partner_hoa_don document: billCode: missing required field"
        );
    }

    #[test]
    fn code_length_is_counted_in_characters_after_trimming() {
        let kind = DocumentKind::PartnerHoaDon;
        let hundred = format!("  {}  ", "đ".repeat(100));
        assert_eq!(kind.validate(&json!({ "billCode": hundred })), Ok(()));
        let err = only(
            kind.validate(&json!({ "billCode": "đ".repeat(101) }))
                .unwrap_err(),
        );
        assert_eq!(err.problem, "too long: 101 characters, at most 100 allowed");
    }

    #[test]
    fn payload_must_be_an_object() {
        let err = only(
            DocumentKind::PartnerPhieuNhap
                .validate(&json!("PN-1"))
                .unwrap_err(),
        );
        assert_eq!(
            (err.field.as_str(), err.problem.as_str()),
            ("$", "expected an object, got string")
        );
    }
}
