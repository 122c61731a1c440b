//! The pay page's languages (English, Dutch, German, French, Chinese: the spec's) and money
//! formatted per locale. Only the consumer's page is translated; the merchant dashboard and the
//! operator desk are English. The tables are code, not files, so a missing string is a
//! compile error rather than a blank button.

use ipay_engine::money::Currency;

/// A supported locale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locale {
    En,
    Nl,
    De,
    Fr,
    Zh,
}

/// Every locale, in the order the language links show them.
pub const ALL: [Locale; 5] = [Locale::En, Locale::Nl, Locale::De, Locale::Fr, Locale::Zh];

impl Locale {
    /// A `lang` query value or an `Accept-Language` tag (`nl-BE` → Dutch).
    pub fn from_tag(tag: &str) -> Option<Locale> {
        let primary = tag
            .trim()
            .split(['-', '_', ';'])
            .next()?
            .to_ascii_lowercase();
        ALL.into_iter().find(|l| l.code() == primary)
    }

    /// The first supported language of an `Accept-Language` header (quality order is the
    /// header's order in practice), English when none is.
    pub fn negotiate(query: Option<&str>, accept_language: Option<&str>) -> Locale {
        if let Some(l) = query.and_then(Locale::from_tag) {
            return l;
        }
        accept_language
            .into_iter()
            .flat_map(|h| h.split(','))
            .find_map(Locale::from_tag)
            .unwrap_or(Locale::En)
    }

    /// BCP 47 code.
    pub fn code(&self) -> &'static str {
        match self {
            Locale::En => "en",
            Locale::Nl => "nl",
            Locale::De => "de",
            Locale::Fr => "fr",
            Locale::Zh => "zh",
        }
    }

    /// The language's own name.
    pub fn name(&self) -> &'static str {
        match self {
            Locale::En => "English",
            Locale::Nl => "Nederlands",
            Locale::De => "Deutsch",
            Locale::Fr => "Français",
            Locale::Zh => "中文",
        }
    }

    /// The pay page's strings.
    pub fn strings(&self) -> &'static Strings {
        match self {
            Locale::En => &EN,
            Locale::Nl => &NL,
            Locale::De => &DE,
            Locale::Fr => &FR,
            Locale::Zh => &ZH,
        }
    }
}

/// The pay page's text in one language.
#[derive(Debug)]
pub struct Strings {
    pub title: &'static str,
    pub pay_to: &'static str,
    pub amount: &'static str,
    pub reference: &'static str,
    pub parcel: &'static str,
    pub choose: &'static str,
    pub pay_with: &'static str,
    pub scan: &'static str,
    pub open_link: &'static str,
    pub waiting: &'static str,
    pub paid: &'static str,
    pub otp_hint: &'static str,
    pub otp_label: &'static str,
    pub delivered: &'static str,
    pub expired: &'static str,
    pub failed: &'static str,
    pub language: &'static str,
    /// AWAITING_PICKUP, PICKED_UP, IN_DELIVERY, DELIVERED.
    pub parcel_states: [&'static str; 4],
}

static EN: Strings = Strings {
    title: "Pay for your parcel",
    pay_to: "Pay to",
    amount: "Amount",
    reference: "Reference",
    parcel: "Parcel",
    choose: "Choose how to pay",
    pay_with: "Pay with",
    scan: "Scan this code with the app to pay",
    open_link: "Continue to payment",
    waiting: "Waiting for your payment…",
    paid: "Paid — thank you",
    otp_hint: "Give this code to the driver at the door",
    otp_label: "Delivery code",
    delivered: "Delivered",
    expired: "The payment expired. Choose a way to pay again.",
    failed: "The payment did not go through. Choose a way to pay again.",
    language: "Language",
    parcel_states: [
        "Awaiting pickup",
        "Picked up",
        "Out for delivery",
        "Delivered",
    ],
};

static NL: Strings = Strings {
    title: "Betaal je pakket",
    pay_to: "Betalen aan",
    amount: "Bedrag",
    reference: "Kenmerk",
    parcel: "Pakket",
    choose: "Kies hoe je betaalt",
    pay_with: "Betaal met",
    scan: "Scan deze code met de app om te betalen",
    open_link: "Verder naar betalen",
    waiting: "We wachten op je betaling…",
    paid: "Betaald — dank je wel",
    otp_hint: "Geef deze code aan de bezorger aan de deur",
    otp_label: "Bezorgcode",
    delivered: "Bezorgd",
    expired: "De betaling is verlopen. Kies opnieuw hoe je betaalt.",
    failed: "De betaling is niet gelukt. Kies opnieuw hoe je betaalt.",
    language: "Taal",
    parcel_states: ["Wacht op ophalen", "Opgehaald", "Onderweg", "Bezorgd"],
};

static DE: Strings = Strings {
    title: "Paket bezahlen",
    pay_to: "Zahlung an",
    amount: "Betrag",
    reference: "Referenz",
    parcel: "Paket",
    choose: "Zahlungsart wählen",
    pay_with: "Bezahlen mit",
    scan: "Scannen Sie diesen Code mit der App",
    open_link: "Weiter zur Zahlung",
    waiting: "Wir warten auf Ihre Zahlung…",
    paid: "Bezahlt — vielen Dank",
    otp_hint: "Nennen Sie diesen Code dem Fahrer an der Tür",
    otp_label: "Zustellcode",
    delivered: "Zugestellt",
    expired: "Die Zahlung ist abgelaufen. Bitte erneut wählen.",
    failed: "Die Zahlung ist fehlgeschlagen. Bitte erneut wählen.",
    language: "Sprache",
    parcel_states: [
        "Wartet auf Abholung",
        "Abgeholt",
        "In Zustellung",
        "Zugestellt",
    ],
};

static FR: Strings = Strings {
    title: "Payer votre colis",
    pay_to: "Payer à",
    amount: "Montant",
    reference: "Référence",
    parcel: "Colis",
    choose: "Choisissez votre moyen de paiement",
    pay_with: "Payer avec",
    scan: "Scannez ce code avec l’application pour payer",
    open_link: "Continuer vers le paiement",
    waiting: "En attente de votre paiement…",
    paid: "Payé — merci",
    otp_hint: "Donnez ce code au livreur à la porte",
    otp_label: "Code de livraison",
    delivered: "Livré",
    expired: "Le paiement a expiré. Choisissez à nouveau.",
    failed: "Le paiement a échoué. Choisissez à nouveau.",
    language: "Langue",
    parcel_states: [
        "En attente d’enlèvement",
        "Pris en charge",
        "En cours de livraison",
        "Livré",
    ],
};

static ZH: Strings = Strings {
    title: "支付您的包裹",
    pay_to: "收款方",
    amount: "金额",
    reference: "参考号",
    parcel: "包裹",
    choose: "选择支付方式",
    pay_with: "使用以下方式支付",
    scan: "请用应用扫描此二维码付款",
    open_link: "继续付款",
    waiting: "正在等待您的付款…",
    paid: "已付款，谢谢",
    otp_hint: "请在门口将此代码告诉快递员",
    otp_label: "取件码",
    delivered: "已送达",
    expired: "付款已过期，请重新选择支付方式。",
    failed: "付款未成功，请重新选择支付方式。",
    language: "语言",
    parcel_states: ["待取件", "已取件", "派送中", "已送达"],
};

impl Strings {
    /// A parcel state's name (its wire name, e.g. `IN_DELIVERY`) in this language.
    pub fn parcel_state<'a>(&self, wire: &'a str) -> &'a str {
        match wire {
            "AWAITING_PICKUP" => self.parcel_states[0],
            "PICKED_UP" => self.parcel_states[1],
            "IN_DELIVERY" => self.parcel_states[2],
            "DELIVERED" => self.parcel_states[3],
            other => other,
        }
    }
}

/// A channel's display name.
pub fn channel_name(channel: &str) -> &str {
    match channel {
        "alipay" => "Alipay",
        "wechat" => "WeChat Pay",
        "promptpay" => "PromptPay",
        "stripe" => "Card (Stripe)",
        "multisafepay" => "iDEAL (MultiSafepay)",
        "sandbox" => "Sandbox",
        other => other,
    }
}

fn symbol(code: &str, locale: Locale) -> &str {
    match (code, locale) {
        ("EUR", _) => "€",
        ("USD", Locale::En) => "$",
        ("USD", _) => "US$",
        ("GBP", _) => "£",
        ("THB", _) => "฿",
        ("CNY", Locale::Zh) => "¥",
        ("CNY", _) => "CN¥",
        ("JPY", Locale::Zh) => "JP¥",
        ("JPY", _) => "¥",
        _ => code,
    }
}

/// Groups an unsigned digit string in threes with `sep`.
fn group(digits: &str, sep: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 * sep.len());
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push_str(sep);
        }
        out.push(ch);
    }
    out
}

/// Formats minor units of `currency` as the locale writes money: `€1,234.50` (en),
/// `€ 1.234,50` (nl), `1.234,50 €` (de), `1 234,50 €` (fr, narrow no-break spaces),
/// `€1,234.50` (zh). Integer arithmetic only. An unknown currency code is shown with its
/// code and two decimals.
pub fn format_money(minor: i64, currency: &str, locale: Locale) -> String {
    let exp = Currency::parse(currency).map(|c| c.exponent()).unwrap_or(2) as u32;
    let neg = minor < 0;
    let abs = minor.unsigned_abs();
    let div = 10u64.pow(exp);
    let (whole, frac) = (abs / div, abs % div);
    let (group_sep, dec_sep) = match locale {
        Locale::En | Locale::Zh => (",", "."),
        Locale::Nl | Locale::De => (".", ","),
        Locale::Fr => ("\u{202f}", ","),
    };
    let mut number = group(&whole.to_string(), group_sep);
    if exp > 0 {
        number.push_str(dec_sep);
        number.push_str(&format!("{frac:0width$}", width = exp as usize));
    }
    let sym = symbol(currency, locale);
    let sign = if neg { "-" } else { "" };
    match locale {
        Locale::En | Locale::Zh => format!("{sign}{sym}{number}"),
        Locale::Nl => format!("{sym}\u{a0}{sign}{number}"),
        Locale::De | Locale::Fr => format!("{sign}{number}\u{a0}{sym}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_written_the_way_each_locale_writes_it() {
        assert_eq!(format_money(123_450, "EUR", Locale::En), "€1,234.50");
        assert_eq!(format_money(123_450, "EUR", Locale::Nl), "€\u{a0}1.234,50");
        assert_eq!(format_money(123_450, "EUR", Locale::De), "1.234,50\u{a0}€");
        assert_eq!(
            format_money(123_450, "EUR", Locale::Fr),
            "1\u{202f}234,50\u{a0}€"
        );
        assert_eq!(format_money(699, "CNY", Locale::Zh), "¥6.99");
        assert_eq!(format_money(699, "CNY", Locale::En), "CN¥6.99");
        assert_eq!(format_money(500, "JPY", Locale::En), "¥500");
        assert_eq!(format_money(5, "EUR", Locale::En), "€0.05");
        assert_eq!(format_money(1_000_000, "KWD", Locale::En), "KWD1,000.000");
    }

    #[test]
    fn languages_come_from_the_query_then_accept_language_then_english() {
        assert_eq!(Locale::negotiate(Some("de"), Some("fr")), Locale::De);
        assert_eq!(Locale::negotiate(None, Some("nl-BE,nl;q=0.9")), Locale::Nl);
        assert_eq!(Locale::negotiate(Some("xx"), Some("es, zh-CN")), Locale::Zh);
        assert_eq!(Locale::negotiate(None, None), Locale::En);
    }
}
