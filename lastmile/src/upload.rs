//! Bulk order upload: CSV (streamed) and XLSX, with columns mapped from header synonyms.
//!
//! A CSV is never held whole: the body arrives as a stream of chunks, a blocking thread parses
//! it record by record and hands batches of `upload_batch_size` validated orders to the async
//! side, which stores each batch as one ledger write while the next one is parsed. Memory is
//! bounded by a few batches whatever the file size. An XLSX is a zip whose directory sits at
//! its end, so it is read whole (up to `xlsx_max_bytes`) and then goes through the same path.
//!
//! Valid rows become orders; invalid rows are reported as `{row, column, reason}`; rows whose
//! external id exists (or repeats within the file) are skipped and reported. Rows are numbered
//! as a spreadsheet or editor shows them: the header is row 1 (CSV: the line a record ends on).

use crate::LastMile;
use crate::orders::{
    Address, Customer, FieldError, Inserted, OrderInput, OrderItem, ValidOrder, validate,
};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use ipay_adapters::shops::parse_major;
use ipay_engine::engine::AmountInput;
use ipay_engine::error::{EngineError, EngineResult};
use ipay_engine::ids::MerchantId;
use ipay_engine::money::Currency;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{self, BufRead, Read};
use tokio::sync::mpsc;

/// The file kinds accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadFormat {
    Csv,
    Xlsx,
}

impl UploadFormat {
    /// The format named by a content type or, failing that, a file name.
    pub fn detect(content_type: Option<&str>, file_name: Option<&str>) -> Option<UploadFormat> {
        let ct = content_type
            .map(|c| {
                c.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        match ct.as_str() {
            "text/csv" | "application/csv" | "text/comma-separated-values" => {
                return Some(UploadFormat::Csv);
            }
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => {
                return Some(UploadFormat::Xlsx);
            }
            _ => {}
        }
        let name = file_name?.to_ascii_lowercase();
        if name.ends_with(".csv") || name.ends_with(".txt") {
            Some(UploadFormat::Csv)
        } else if name.ends_with(".xlsx") {
            Some(UploadFormat::Xlsx)
        } else {
            None
        }
    }

    fn source(&self) -> &'static str {
        match self {
            UploadFormat::Csv => "csv",
            UploadFormat::Xlsx => "xlsx",
        }
    }
}

/// One refused row.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RowError {
    /// Spreadsheet row number (the header is row 1).
    pub row: u64,
    /// The column as named in the file's header (or the field, when no column maps to it).
    pub column: String,
    pub reason: String,
}

/// One skipped duplicate row.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DuplicateRow {
    pub row: u64,
    pub external_id: String,
    /// The order that already has this external id (absent when the duplicate is earlier in
    /// the same file and not yet stored at the time).
    pub existing_order_id: Option<String>,
}

/// What an upload did.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct UploadReport {
    /// Data rows read (blank rows are not counted).
    pub rows: u64,
    pub created: u64,
    pub duplicates: u64,
    pub failed: u64,
    /// The first `upload_max_reported_rows` refused rows.
    pub errors: Vec<RowError>,
    /// The first `upload_max_reported_rows` duplicate rows.
    pub duplicate_rows: Vec<DuplicateRow>,
    /// Whether `errors` or `duplicate_rows` were cut short (the counts stay exact).
    pub truncated: bool,
    /// Header → field, for every column that was recognised.
    pub column_mapping: BTreeMap<String, String>,
    /// Columns that map to no field.
    pub ignored_columns: Vec<String>,
    /// Set when the upload stopped early (body too large, unreadable file); rows before that
    /// point were processed as reported.
    pub aborted: Option<String>,
}

/// The fields a column can fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Field {
    ExternalId,
    Name,
    Email,
    Phone,
    Line1,
    Line2,
    City,
    PostalCode,
    Region,
    Country,
    Amount,
    AmountMinor,
    Currency,
    Carrier,
    IpayFlag,
    Sku,
    ItemName,
    Qty,
    UnitPrice,
}

/// Header synonyms, compared after lower-casing and dropping everything but letters and
/// digits (`Postal Code`, `postal_code` and `POSTCODE` all read `postalcode`).
const SYNONYMS: &[(Field, &str, &[&str])] = &[
    (
        Field::ExternalId,
        "external_id",
        &[
            "externalid",
            "orderid",
            "ordernumber",
            "orderno",
            "ordernr",
            "order",
            "reference",
            "ref",
            "externalreference",
            "shoporderid",
            "bestelnummer",
        ],
    ),
    (
        Field::Name,
        "customer_name",
        &[
            "customername",
            "name",
            "fullname",
            "customer",
            "recipient",
            "recipientname",
            "consignee",
            "consigneename",
            "shiptoname",
            "naam",
        ],
    ),
    (
        Field::Email,
        "email",
        &["email", "emailaddress", "customeremail", "mail"],
    ),
    (
        Field::Phone,
        "phone",
        &[
            "phone",
            "phonenumber",
            "telephone",
            "tel",
            "mobile",
            "customerphone",
            "telefoon",
        ],
    ),
    (
        Field::Line1,
        "address_line1",
        &[
            "addressline1",
            "address1",
            "address",
            "street",
            "streetaddress",
            "line1",
            "shiptoaddress",
            "adres",
        ],
    ),
    (
        Field::Line2,
        "address_line2",
        &["addressline2", "address2", "line2", "addition"],
    ),
    (
        Field::City,
        "city",
        &["city", "town", "plaats", "woonplaats", "shiptocity"],
    ),
    (
        Field::PostalCode,
        "postal_code",
        &[
            "postalcode",
            "postcode",
            "zip",
            "zipcode",
            "postcodezip",
            "shiptozip",
        ],
    ),
    (
        Field::Region,
        "region",
        &["region", "state", "province", "county", "provincie"],
    ),
    (
        Field::Country,
        "country",
        &[
            "country",
            "countrycode",
            "countryiso",
            "land",
            "shiptocountry",
        ],
    ),
    (
        Field::Amount,
        "amount",
        &[
            "amount",
            "total",
            "totalamount",
            "ordertotal",
            "grandtotal",
            "codamount",
            "value",
            "bedrag",
        ],
    ),
    (
        Field::AmountMinor,
        "amount_minor",
        &[
            "amountminor",
            "amountcents",
            "totalcents",
            "amountminorunits",
        ],
    ),
    (
        Field::Currency,
        "currency",
        &["currency", "currencycode", "cur", "valuta"],
    ),
    (
        Field::Carrier,
        "carrier_code",
        &[
            "carriercode",
            "carrier",
            "shippingcarrier",
            "courier",
            "shipper",
            "vervoerder",
        ],
    ),
    (
        Field::IpayFlag,
        "ipay_flag",
        &["ipayflag", "ipay", "useipay", "cod", "payondelivery"],
    ),
    (
        Field::Sku,
        "item_sku",
        &[
            "sku",
            "itemsku",
            "productsku",
            "articlenumber",
            "artikelnummer",
        ],
    ),
    (
        Field::ItemName,
        "item_name",
        &[
            "itemname",
            "productname",
            "product",
            "item",
            "description",
            "artikel",
        ],
    ),
    (
        Field::Qty,
        "item_qty",
        &["qty", "quantity", "itemqty", "aantal", "units"],
    ),
    (
        Field::UnitPrice,
        "item_unit_price",
        &["unitprice", "itemprice", "priceperunit", "price", "prijs"],
    ),
];

fn normalize_header(h: &str) -> String {
    h.trim_start_matches('\u{feff}')
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The column layout of one file.
struct Mapper {
    /// For each column, the field it fills.
    cols: Vec<Option<Field>>,
    /// For each field, the column's header text.
    header_of: BTreeMap<Field, String>,
    default_currency: Option<Currency>,
    mapping: BTreeMap<String, String>,
    ignored: Vec<String>,
}

impl Mapper {
    fn new(headers: &[String], default_currency: Option<Currency>) -> EngineResult<Mapper> {
        let mut cols = Vec::with_capacity(headers.len());
        let mut header_of = BTreeMap::new();
        let mut mapping = BTreeMap::new();
        let mut ignored = Vec::new();
        for h in headers {
            let n = normalize_header(h);
            let found = SYNONYMS
                .iter()
                .find(|(f, _, syn)| syn.contains(&n.as_str()) && !header_of.contains_key(f));
            match found {
                Some((f, name, _)) => {
                    header_of.insert(*f, h.trim().to_string());
                    mapping.insert(h.trim().to_string(), (*name).to_string());
                    cols.push(Some(*f));
                }
                None => {
                    if !h.trim().is_empty() {
                        ignored.push(h.trim().to_string());
                    }
                    cols.push(None);
                }
            }
        }
        let mut missing = Vec::new();
        for (f, what) in [
            (Field::Name, "customer_name"),
            (Field::Line1, "address_line1"),
            (Field::City, "city"),
            (Field::PostalCode, "postal_code"),
            (Field::Country, "country"),
            (Field::Carrier, "carrier_code"),
        ] {
            if !header_of.contains_key(&f) {
                missing.push(what);
            }
        }
        if !header_of.contains_key(&Field::Amount) && !header_of.contains_key(&Field::AmountMinor) {
            missing.push("amount");
        }
        if !header_of.contains_key(&Field::Currency) && default_currency.is_none() {
            missing.push("currency (or ?currency=EUR)");
        }
        if !missing.is_empty() {
            return Err(EngineError::invalid(
                "upload_columns_missing",
                "file",
                format!(
                    "the header lacks required columns: {} (see GET /api/orders/sample.csv; \
                     synonyms are listed in docs/lastmile-orders.md)",
                    missing.join(", ")
                ),
            ));
        }
        Ok(Mapper {
            cols,
            header_of,
            default_currency,
            mapping,
            ignored,
        })
    }

    fn column(&self, f: Field) -> String {
        self.header_of.get(&f).cloned().unwrap_or_else(|| {
            SYNONYMS
                .iter()
                .find(|(g, _, _)| *g == f)
                .map(|(_, n, _)| (*n).to_string())
                .unwrap_or_default()
        })
    }

    /// The column an order field path (`customer.address.country`, `items[0].qty`) came from.
    fn column_of_path(&self, path: &str) -> String {
        let f = match path {
            "external_id" => Field::ExternalId,
            "customer.name" => Field::Name,
            "customer.email" => Field::Email,
            "customer.phone" => Field::Phone,
            "customer.address.line1" => Field::Line1,
            "customer.address.line2" => Field::Line2,
            "customer.address.city" => Field::City,
            "customer.address.postal_code" => Field::PostalCode,
            "customer.address.region" => Field::Region,
            "customer.address.country" => Field::Country,
            "amount.currency" => Field::Currency,
            "amount.value" if self.header_of.contains_key(&Field::Amount) => Field::Amount,
            "amount.value" => Field::AmountMinor,
            "carrier_code" => Field::Carrier,
            p if p.ends_with(".sku") => Field::Sku,
            p if p.ends_with(".name") => Field::ItemName,
            p if p.ends_with(".qty") => Field::Qty,
            p if p.ends_with(".unit_price") => Field::UnitPrice,
            other => return other.to_string(),
        };
        self.column(f)
    }

    /// Turns one row into a validated order.
    fn map_row<'a>(
        &self,
        row: u64,
        fields: impl Iterator<Item = &'a str>,
    ) -> Result<ValidOrder, RowError> {
        let mut v: BTreeMap<Field, &str> = BTreeMap::new();
        for (i, s) in fields.enumerate() {
            if let Some(Some(f)) = self.cols.get(i) {
                v.insert(*f, s.trim());
            }
        }
        let cells = Cells {
            mapper: self,
            row,
            v,
        };
        let currency = cells.currency()?;
        let exp = currency.exponent();
        let amount = cells.amount(exp)?;
        let ipay_flag = cells.ipay_flag()?;
        let items = cells.items(amount, exp)?;
        let s = |f: Field| cells.get(f).unwrap_or_default().to_string();
        let o = |f: Field| cells.get(f).map(str::to_string);
        let input = OrderInput {
            external_id: o(Field::ExternalId),
            customer: Customer {
                name: s(Field::Name),
                email: o(Field::Email),
                phone: o(Field::Phone),
                address: Address {
                    line1: s(Field::Line1),
                    line2: o(Field::Line2),
                    city: s(Field::City),
                    postal_code: s(Field::PostalCode),
                    region: o(Field::Region),
                    country: s(Field::Country),
                },
            },
            items,
            amount: AmountInput {
                value: amount,
                currency: currency.code().to_string(),
            },
            carrier_code: s(Field::Carrier),
            ipay_flag,
        };
        validate(input).map_err(|FieldError { field, reason }| RowError {
            row,
            column: self.column_of_path(&field),
            reason,
        })
    }
}

/// One data row's cells, keyed by the field their column fills.
struct Cells<'m, 'a> {
    mapper: &'m Mapper,
    row: u64,
    v: BTreeMap<Field, &'a str>,
}

impl<'a> Cells<'_, 'a> {
    /// The field's cell, unless it is absent or blank.
    fn get(&self, f: Field) -> Option<&'a str> {
        self.v.get(&f).copied().filter(|s| !s.is_empty())
    }

    /// A refusal of this row, naming the field's column.
    fn err(&self, f: Field, reason: String) -> RowError {
        RowError {
            row: self.row,
            column: self.mapper.column(f),
            reason,
        }
    }

    /// The row's currency, else the upload's default currency.
    fn currency(&self) -> Result<Currency, RowError> {
        match self.get(Field::Currency) {
            Some(c) => Currency::parse(&c.to_ascii_uppercase())
                .map_err(|e| self.err(Field::Currency, e.to_string())),
            None => self
                .mapper
                .default_currency
                .ok_or_else(|| self.err(Field::Currency, "is required".into())),
        }
    }

    /// The row's amount in minor units: the minor-unit column wins over the major one.
    fn amount(&self, exp: u8) -> Result<i64, RowError> {
        match (self.get(Field::AmountMinor), self.get(Field::Amount)) {
            (Some(m), _) => m.parse::<i64>().map_err(|_| {
                self.err(
                    Field::AmountMinor,
                    "must be a whole number of minor units".into(),
                )
            }),
            (None, Some(a)) => parse_major(a, exp).map_err(|r| self.err(Field::Amount, r)),
            (None, None) => {
                let f = if self.mapper.header_of.contains_key(&Field::Amount) {
                    Field::Amount
                } else {
                    Field::AmountMinor
                };
                Err(self.err(f, "is required".into()))
            }
        }
    }

    /// The row's iPay flag, when it has one.
    fn ipay_flag(&self) -> Result<Option<bool>, RowError> {
        match self
            .get(Field::IpayFlag)
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None => Ok(None),
            Some("1" | "true" | "yes" | "y" | "ja" | "x") => Ok(Some(true)),
            Some("0" | "false" | "no" | "n" | "nee") => Ok(Some(false)),
            Some(_) => Err(self.err(Field::IpayFlag, "must be true/false, yes/no or 1/0".into())),
        }
    }

    /// The row's single item, when it names a SKU or an item; priced from the amount unless
    /// it has a unit price.
    fn items(&self, amount: i64, exp: u8) -> Result<Vec<OrderItem>, RowError> {
        let mut items = Vec::new();
        if self.get(Field::Sku).is_some() || self.get(Field::ItemName).is_some() {
            let qty = match self.get(Field::Qty) {
                None => 1,
                Some(q) => q
                    .parse::<u32>()
                    .map_err(|_| self.err(Field::Qty, "must be a whole number".into()))?,
            };
            let unit_price = match self.get(Field::UnitPrice) {
                Some(p) => parse_major(p, exp).map_err(|r| self.err(Field::UnitPrice, r))?,
                None => amount / i64::from(qty.max(1)),
            };
            let sku = self
                .get(Field::Sku)
                .or(self.get(Field::ItemName))
                .unwrap_or_default();
            let name = self
                .get(Field::ItemName)
                .or(self.get(Field::Sku))
                .unwrap_or_default();
            items.push(OrderItem {
                sku: sku.to_string(),
                name: name.to_string(),
                qty,
                unit_price,
            });
        }
        Ok(items)
    }
}

/// What the parser thread sends to the writer.
enum Msg {
    /// The header was read.
    Header {
        mapping: BTreeMap<String, String>,
        ignored: Vec<String>,
    },
    /// A batch of rows.
    Batch {
        rows: u64,
        orders: Vec<(u64, ValidOrder)>,
        errors: Vec<RowError>,
    },
    /// A fatal problem before any row (bad header): the whole upload is refused.
    Refused(EngineError),
    /// A fatal problem after some rows: stop, report what was done.
    Aborted(String),
}

/// Collects rows into batches and sends them to the writer; `false` once the writer is gone.
struct Batcher {
    tx: mpsc::Sender<Msg>,
    size: usize,
    rows: u64,
    orders: Vec<(u64, ValidOrder)>,
    errors: Vec<RowError>,
}

impl Batcher {
    fn push(&mut self, row: u64, r: Result<ValidOrder, RowError>) -> bool {
        self.rows += 1;
        match r {
            Ok(o) => self.orders.push((row, o)),
            Err(e) => self.errors.push(e),
        }
        if self.orders.len() + self.errors.len() >= self.size {
            return self.flush();
        }
        true
    }

    fn flush(&mut self) -> bool {
        let msg = Msg::Batch {
            rows: std::mem::take(&mut self.rows),
            orders: std::mem::take(&mut self.orders),
            errors: std::mem::take(&mut self.errors),
        };
        self.tx.blocking_send(msg).is_ok()
    }
}

fn is_blank<'a>(mut fields: impl Iterator<Item = &'a str>) -> bool {
    fields.all(|f| f.trim().is_empty())
}

/// Parses a CSV from `r` (blocking), sending batches to `tx`.
fn parse_csv(r: impl Read, currency: Option<Currency>, tx: mpsc::Sender<Msg>, size: usize) {
    let mut r = io::BufReader::with_capacity(64 * 1024, r);
    let delimiter = match sniff_delimiter(&mut r) {
        Ok(d) => d,
        Err(e) => {
            let _ = tx.blocking_send(Msg::Refused(read_error(&e)));
            return;
        }
    };
    let mut csv = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .has_headers(false)
        .from_reader(r);
    let mut record = csv::ByteRecord::new();
    let headers = match read_csv_header(&mut csv, &mut record) {
        Ok(h) => h,
        Err(e) => {
            let _ = tx.blocking_send(Msg::Refused(e));
            return;
        }
    };
    let mapper = match Mapper::new(&headers, currency) {
        Ok(m) => m,
        Err(e) => {
            let _ = tx.blocking_send(Msg::Refused(e));
            return;
        }
    };
    if tx
        .blocking_send(Msg::Header {
            mapping: mapper.mapping.clone(),
            ignored: mapper.ignored.clone(),
        })
        .is_err()
    {
        return;
    }
    let mut b = Batcher {
        tx,
        size,
        rows: 0,
        orders: Vec::with_capacity(size),
        errors: Vec::new(),
    };
    if read_csv_rows(&mut csv, &mut record, &headers, &mapper, &mut b) {
        b.flush();
    }
}

/// Sniffs the delimiter from the header line: `,`, `;` (Excel in many EU locales) or tab.
fn sniff_delimiter(r: &mut impl BufRead) -> io::Result<u8> {
    let buf = r.fill_buf()?;
    let line = buf.split(|b| *b == b'\n').next().unwrap_or(buf);
    let count = |d: u8| line.iter().filter(|b| **b == d).count();
    Ok([b',', b';', b'\t']
        .into_iter()
        .max_by_key(|d| count(*d))
        .unwrap_or(b','))
}

/// Reads the header record; an empty or unreadable file refuses the upload.
fn read_csv_header<R: Read>(
    csv: &mut csv::Reader<R>,
    record: &mut csv::ByteRecord,
) -> EngineResult<Vec<String>> {
    match csv.read_byte_record(record) {
        Ok(true) => Ok(record
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect()),
        Ok(false) => Err(EngineError::invalid(
            "upload_empty",
            "file",
            "the file is empty; send a header row and data rows",
        )),
        Err(e) => Err(csv_error(&e)),
    }
}

/// Maps and batches every data record; false when the upload ended early (writer gone or an
/// I/O error, already reported), true when the caller should flush the last batch.
fn read_csv_rows<R: Read>(
    csv: &mut csv::Reader<R>,
    record: &mut csv::ByteRecord,
    headers: &[String],
    mapper: &Mapper,
    b: &mut Batcher,
) -> bool {
    let mut row: u64 = 1;
    loop {
        match csv.read_byte_record(record) {
            Ok(false) => return true,
            Ok(true) => {
                // The line the record ends on (the input always ends with a newline, see
                // `ChannelReader`), so blank lines count as in an editor.
                row = csv.position().line().saturating_sub(1).max(row + 1);
                let Some(result) = map_csv_record(row, record, headers, mapper) else {
                    continue;
                };
                if !b.push(row, result) {
                    return false;
                }
            }
            Err(e) => {
                // An I/O error (body too large, connection lost) ends the upload; a CSV syntax
                // error only costs its row.
                if e.is_io_error() {
                    b.flush();
                    let _ = b.tx.blocking_send(Msg::Aborted(csv_error(&e).to_string()));
                    return false;
                }
                row += 1;
                if !b.push(
                    row,
                    Err(RowError {
                        row,
                        column: String::new(),
                        reason: format!("unreadable CSV row: {e}"),
                    }),
                ) {
                    return false;
                }
            }
        }
    }
}

/// Maps one CSV record read on `row`; `None` for a blank record.
fn map_csv_record(
    row: u64,
    record: &csv::ByteRecord,
    headers: &[String],
    mapper: &Mapper,
) -> Option<Result<ValidOrder, RowError>> {
    let fields: Result<Vec<&str>, usize> = record
        .iter()
        .enumerate()
        .map(|(i, f)| std::str::from_utf8(f).map_err(|_| i))
        .collect();
    match fields {
        Ok(fields) => {
            if is_blank(fields.iter().copied()) {
                return None;
            }
            Some(mapper.map_row(row, fields.into_iter()))
        }
        Err(i) => Some(Err(RowError {
            row,
            column: headers.get(i).cloned().unwrap_or_default(),
            reason: "is not valid UTF-8; save the file as UTF-8".into(),
        })),
    }
}

/// Most columns an XLSX sheet may span. The sheet is read cell by cell and only the cells
/// present are kept, so a lone cell far away (`XFD1048576`) cannot make a tiny file claim the
/// memory of its whole bounding box; past this width the file is refused.
const XLSX_MAX_COLUMNS: u32 = 512;

/// One non-empty row of a worksheet: its 0-based sheet row and its cells (column, text).
type SparseRow = (u32, Vec<(u32, String)>);

/// The first worksheet's non-empty cells grouped by row, in sheet order, and the leftmost
/// and rightmost columns used. Memory grows with the cells present, never with the area they
/// span.
fn xlsx_cells(bytes: Vec<u8>) -> Result<(Vec<SparseRow>, u32, u32), String> {
    use calamine::{Data, Reader, Xlsx, XlsxError};
    let mut wb: Xlsx<_> = calamine::open_workbook_from_rs(io::Cursor::new(bytes))
        .map_err(|e| format!("not a readable XLSX workbook: {e}"))?;
    let name = wb
        .sheet_names()
        .first()
        .cloned()
        .ok_or("the workbook has no worksheet")?;
    let unreadable = |e: XlsxError| format!("cannot read the first worksheet: {e}");
    let mut reader = match wb.worksheet_cells_reader(&name) {
        Ok(r) => r,
        // A chart sheet first: no cells, reported as an empty sheet.
        Err(XlsxError::NotAWorksheet(_)) => return Ok((Vec::new(), 0, 0)),
        Err(e) => return Err(unreadable(e)),
    };
    let mut rows: BTreeMap<u32, Vec<(u32, String)>> = BTreeMap::new();
    let (mut min_col, mut max_col) = (u32::MAX, 0);
    while let Some(cell) = reader.next_cell().map_err(unreadable)? {
        let data = Data::from(cell.get_value().clone());
        if matches!(data, Data::Empty) {
            continue;
        }
        let (row, col) = cell.get_position();
        (min_col, max_col) = (min_col.min(col), max_col.max(col));
        if max_col - min_col >= XLSX_MAX_COLUMNS {
            return Err(format!(
                "the first worksheet uses more than {XLSX_MAX_COLUMNS} columns; keep the orders \
                 in one table near column A"
            ));
        }
        rows.entry(row).or_default().push((col, data.to_string()));
    }
    Ok((rows.into_iter().collect(), min_col, max_col))
}

/// A sparse row laid out densely from column `min_col` to `max_col`.
fn dense_row(cells: Vec<(u32, String)>, min_col: u32, max_col: u32) -> Vec<String> {
    let mut out = vec![String::new(); (max_col - min_col + 1) as usize];
    for (col, text) in cells {
        out[(col - min_col) as usize] = text;
    }
    out
}

/// Parses an XLSX held in memory (blocking): the first worksheet, first row the header.
fn parse_xlsx(bytes: Vec<u8>, currency: Option<Currency>, tx: mpsc::Sender<Msg>, size: usize) {
    let (rows, min_col, max_col) = match xlsx_cells(bytes) {
        Ok(cells) => cells,
        Err(why) => {
            let _ = tx.blocking_send(Msg::Refused(EngineError::invalid(
                "upload_unreadable",
                "file",
                why,
            )));
            return;
        }
    };
    let mut rows = rows.into_iter();
    let headers = match rows.next() {
        Some((_, h)) => dense_row(h, min_col, max_col),
        None => {
            let _ = tx.blocking_send(Msg::Refused(EngineError::invalid(
                "upload_empty",
                "file",
                "the first worksheet is empty; put a header row and data rows in it",
            )));
            return;
        }
    };
    let mapper = match Mapper::new(&headers, currency) {
        Ok(m) => m,
        Err(e) => {
            let _ = tx.blocking_send(Msg::Refused(e));
            return;
        }
    };
    if tx
        .blocking_send(Msg::Header {
            mapping: mapper.mapping.clone(),
            ignored: mapper.ignored.clone(),
        })
        .is_err()
    {
        return;
    }
    let mut b = Batcher {
        tx,
        size,
        rows: 0,
        orders: Vec::with_capacity(size),
        errors: Vec::new(),
    };
    for (sheet_row, cells) in rows {
        // Rows are numbered as the spreadsheet shows them (1-based).
        let row = u64::from(sheet_row) + 1;
        let fields = dense_row(cells, min_col, max_col);
        if is_blank(fields.iter().map(String::as_str)) {
            continue;
        }
        if !b.push(row, mapper.map_row(row, fields.iter().map(String::as_str))) {
            return;
        }
    }
    b.flush();
}

fn read_error(e: &io::Error) -> EngineError {
    if e.kind() == io::ErrorKind::FileTooLarge {
        EngineError::invalid("upload_too_large", "file", e.to_string())
    } else {
        EngineError::invalid(
            "upload_unreadable",
            "file",
            format!("could not read the upload: {e}"),
        )
    }
}

fn csv_error(e: &csv::Error) -> EngineError {
    match e.kind() {
        csv::ErrorKind::Io(io) => read_error(io),
        _ => EngineError::invalid("upload_unreadable", "file", format!("unreadable CSV: {e}")),
    }
}

/// A blocking reader over byte chunks sent from the async side. It adds a newline at the end,
/// so that every record ends with one and its line number is exact.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
    ended: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None if self.ended => return Ok(0),
                None => {
                    self.ended = true;
                    self.cur = Bytes::from_static(b"\n");
                }
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

fn too_large(max: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        format!("the upload is larger than {max} bytes; split it into several files"),
    )
}

impl LastMile {
    /// Ingests a CSV or XLSX of orders for `merchant` from a stream of body chunks.
    /// `default_currency` applies to rows when the file has no currency column.
    ///
    /// Errors (nothing stored): unreadable or empty file, missing required columns, unknown
    /// default currency. Otherwise the report says what each row became.
    pub async fn upload_orders<S, E>(
        &self,
        merchant: MerchantId,
        format: UploadFormat,
        default_currency: Option<&str>,
        body: S,
    ) -> EngineResult<UploadReport>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let currency = default_currency
            .map(|c| {
                Currency::parse(&c.trim().to_ascii_uppercase())
                    .map_err(|e| EngineError::money("currency", e))
            })
            .transpose()?;
        let size = self.cfg.upload_batch_size;
        let (tx, rx) = mpsc::channel::<Msg>(2);
        let (pump, parser) = match format {
            UploadFormat::Csv => {
                let (btx, brx) = mpsc::channel::<io::Result<Bytes>>(16);
                let reader = ChannelReader {
                    rx: brx,
                    cur: Bytes::new(),
                    ended: false,
                };
                let parser = tokio::task::spawn_blocking(move || {
                    parse_csv(reader, currency, tx, size);
                });
                let pump = pump_body(body, btx, self.cfg.upload_max_bytes);
                (futures::future::Either::Left(pump), parser)
            }
            UploadFormat::Xlsx => {
                let buf = read_xlsx_body(body, self.cfg.xlsx_max_bytes).await?;
                let parser = tokio::task::spawn_blocking(move || {
                    parse_xlsx(buf, currency, tx, size);
                });
                (futures::future::Either::Right(async {}), parser)
            }
        };
        // The writer owns `rx`, so when it stops early the channel closes and the parser
        // thread (blocked on a full channel) ends too.
        let writer = self.write_upload(merchant, format.source(), rx);
        let (_, rep) = futures::join!(pump, writer);
        let _ = parser.await;
        rep
    }

    /// Stores the parser's batches as they arrive and builds the report.
    async fn write_upload(
        &self,
        merchant: MerchantId,
        source: &str,
        mut rx: mpsc::Receiver<Msg>,
    ) -> EngineResult<UploadReport> {
        let max_reported = self.cfg.upload_max_reported_rows;
        let mut rep = UploadReport::default();
        while let Some(msg) = rx.recv().await {
            match msg {
                Msg::Header { mapping, ignored } => {
                    rep.column_mapping = mapping;
                    rep.ignored_columns = ignored;
                }
                Msg::Refused(e) => return Err(e),
                Msg::Aborted(why) => {
                    rep.aborted = Some(why);
                    break;
                }
                Msg::Batch {
                    rows,
                    orders,
                    errors,
                } => {
                    rep.rows += rows;
                    rep.add_errors(errors, max_reported);
                    let (row_nos, valid): (Vec<u64>, Vec<ValidOrder>) = orders.into_iter().unzip();
                    let exts: Vec<Option<String>> = valid
                        .iter()
                        .map(|v| v.external_id().map(str::to_string))
                        .collect();
                    let out = self
                        .insert_orders(merchant, source, "manual", valid, &|_| vec![])
                        .await?;
                    let rows = row_nos.into_iter().zip(exts);
                    rep.add_inserted(rows, out, max_reported);
                }
            }
        }
        Ok(rep)
    }
}

impl UploadReport {
    /// Counts refused rows, keeping the first `max_reported` of them.
    fn add_errors(&mut self, errors: Vec<RowError>, max_reported: usize) {
        self.failed += errors.len() as u64;
        for e in errors {
            if self.errors.len() < max_reported {
                self.errors.push(e);
            } else {
                self.truncated = true;
            }
        }
    }

    /// Counts what each stored row (row number, external id) became, keeping the first
    /// `max_reported` duplicates.
    fn add_inserted(
        &mut self,
        rows: impl Iterator<Item = (u64, Option<String>)>,
        out: Vec<Inserted>,
        max_reported: usize,
    ) {
        for ((row, ext), o) in rows.zip(out) {
            match o {
                Inserted::Created(_) => self.created += 1,
                Inserted::Duplicate { existing } => {
                    self.duplicates += 1;
                    if self.duplicate_rows.len() < max_reported {
                        self.duplicate_rows.push(DuplicateRow {
                            row,
                            external_id: ext.unwrap_or_default(),
                            existing_order_id: existing.map(|e| e.to_string()),
                        });
                    } else {
                        self.truncated = true;
                    }
                }
            }
        }
    }
}

/// Forwards the body's chunks to the CSV parser thread, stopping with an error once it
/// exceeds `max` bytes or the body fails.
async fn pump_body<S, E>(body: S, btx: mpsc::Sender<io::Result<Bytes>>, max: u64)
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    let mut total: u64 = 0;
    while let Some(chunk) = body.next().await {
        let item = match chunk {
            Ok(b) => {
                total += b.len() as u64;
                if total > max {
                    Err(too_large(max))
                } else {
                    Ok(b)
                }
            }
            Err(e) => Err(io::Error::other(format!("reading the body failed: {e}"))),
        };
        let stop = item.is_err();
        if btx.send(item).await.is_err() || stop {
            break;
        }
    }
}

/// Reads a whole XLSX body, refusing one over `max` bytes.
async fn read_xlsx_body<S, E>(body: S, max: usize) -> EngineResult<Vec<u8>>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let mut buf = Vec::new();
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let b = chunk.map_err(|e| {
            EngineError::invalid(
                "upload_unreadable",
                "file",
                format!("reading the body failed: {e}"),
            )
        })?;
        if buf.len() + b.len() > max {
            return Err(EngineError::invalid(
                "upload_too_large",
                "file",
                format!("an XLSX upload may be at most {max} bytes; upload large files as CSV"),
            ));
        }
        buf.extend_from_slice(&b);
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_map_through_synonyms() {
        let h: Vec<String> = [
            "Order Number",
            "Recipient",
            "Street",
            "Zip",
            "Town",
            "Country Code",
            "Total",
            "Currency",
            "Courier",
            "Colour",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let m = Mapper::new(&h, None).unwrap();
        assert_eq!(m.mapping["Order Number"], "external_id");
        assert_eq!(m.mapping["Zip"], "postal_code");
        assert_eq!(m.ignored, vec!["Colour".to_string()]);
        let o = m
            .map_row(
                2,
                [
                    "A1",
                    "Jan",
                    "Damrak 1",
                    "1012LG",
                    "Amsterdam",
                    "nl",
                    "19.99",
                    "EUR",
                    "dhl",
                    "red",
                ]
                .into_iter(),
            )
            .unwrap();
        assert_eq!(o.external_id(), Some("A1"));
    }

    #[test]
    fn missing_required_columns_refuse_the_file() {
        let h = vec!["name".to_string(), "city".to_string()];
        let e = Mapper::new(&h, None).err().unwrap();
        assert_eq!(e.code(), "upload_columns_missing");
    }
}
