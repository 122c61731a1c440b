//! Last-mile accounts: users with a role (merchant, operator, driver), argon2id password
//! hashes, and the HS256 JWTs they log in with. A merchant user belongs to a last-mile
//! merchant, which is an engine [`Merchant`](ipay_engine::model::Merchant) (so its events reach the
//! merchant's webhooks) plus the record [`LastMileMerchant`].
//!
//! Who may register whom is decided here ([`Registrar`]); the gateway only says who asks.
//! Stored: `lm_user/{user_id}` (the user), `lm_user_email/{email}` (→ user id),
//! `lm_merchant/{merchant_id}` (the merchant), `lm_config/jwt_secret` (only when generated).

use crate::LastMile;
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use ipay_engine::Engine;
use ipay_engine::clock::Timestamp;
use ipay_engine::error::{EngineError, EngineResult};
use ipay_engine::ids::MerchantId;
use ipay_engine::store::{EntryRange, WriteBatch, WriteOp};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

const USER: &str = "lm_user";
const USER_EMAIL: &str = "lm_user_email";
/// Index: partition = role, sort = user id, value = the user's view (for listing drivers).
const USERS_BY_ROLE: &str = "lm_users_by_role";
const MERCHANT: &str = "lm_merchant";
const CONFIG: &str = "lm_config";
/// Issuer and audience of account tokens.
const ISSUER: &str = "ipay-lastmile";
/// Bounds on account fields.
const MIN_PASSWORD_LEN: usize = 10;
const MAX_PASSWORD_LEN: usize = 256;
const MAX_NAME_LEN: usize = 200;
const MAX_EMAIL_LEN: usize = 254;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sees and manages one merchant's orders and sessions.
    Merchant,
    /// IPAY staff (admin): registers operators and drivers, unlocks references.
    Operator,
    /// Verifies OTPs at the door.
    Driver,
}

impl Role {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Merchant => "merchant",
            Role::Operator => "operator",
            Role::Driver => "driver",
        }
    }
}

impl FromStr for Role {
    type Err = EngineError;
    fn from_str(s: &str) -> EngineResult<Role> {
        match s {
            "merchant" => Ok(Role::Merchant),
            "operator" | "admin" => Ok(Role::Operator),
            "driver" => Ok(Role::Driver),
            _ => Err(EngineError::invalid(
                "parameter_invalid",
                "role",
                "role must be one of merchant, operator, driver",
            )),
        }
    }
}

pub use ipay_engine::ids::UserId;

/// A stored user. The password hash never leaves the engine: use [`User::view`].
#[derive(Clone, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub role: Role,
    /// The merchant a merchant user (or a merchant's driver) belongs to.
    pub merchant_id: Option<MerchantId>,
    /// PHC string of the argon2id hash.
    password_hash: String,
    pub created: Timestamp,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("merchant_id", &self.merchant_id)
            .finish_non_exhaustive()
    }
}

/// What the API shows of a user.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserView {
    #[schema(value_type = String, example = "usr_01J7XZ1A2B3C4D5E6F7G8H9IKM")]
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub role: Role,
    #[schema(value_type = Option<String>)]
    pub merchant_id: Option<MerchantId>,
    /// Name of the merchant, for merchant users.
    pub merchant_name: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created: Timestamp,
}

impl User {
    /// The public view (without the merchant's name).
    pub fn view(&self) -> UserView {
        UserView {
            id: self.id,
            email: self.email.clone(),
            name: self.name.clone(),
            role: self.role,
            merchant_id: self.merchant_id,
            merchant_name: None,
            created: self.created,
        }
    }
}

/// A last-mile merchant: the engine merchant it is, plus what last-mile keeps about it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastMileMerchant {
    pub id: MerchantId,
    pub name: String,
    pub created: Timestamp,
}

/// Who asks to register a user (decided by the gateway from the request's credentials).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registrar {
    /// Nobody: may only register a merchant user with a new merchant.
    Anonymous,
    /// A logged-in operator, or the admin token: may register any role.
    Operator,
}

/// `POST /api/auth/register` body.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub email: String,
    /// At least 10 characters.
    pub password: String,
    /// The person's name.
    pub name: String,
    /// `merchant` (default), `operator` or `driver`; the last two need an operator.
    #[serde(default)]
    pub role: Option<String>,
    /// Name of the new merchant (merchant users; defaults to `name`).
    #[serde(default)]
    pub company_name: Option<String>,
    /// Operators only: attach the new merchant user or driver to this existing merchant.
    #[serde(default)]
    pub merchant_id: Option<String>,
}

/// `POST /api/auth/login` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

impl fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRequest")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// A token and the user it is for (register and login answer this).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// `Authorization: Bearer <token>` on every `/api` call.
    pub token: String,
    /// Always `bearer`.
    pub token_type: &'static str,
    /// Seconds until the token expires.
    pub expires_in: i64,
    pub user: UserView,
}

/// The verified content of an account token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub user_id: UserId,
    pub role: Role,
    pub merchant_id: Option<MerchantId>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mid: Option<String>,
    iss: String,
    aud: String,
    iat: i64,
    exp: i64,
}

/// The HS256 keys account tokens are signed and checked with.
pub(crate) struct JwtKeys {
    enc: EncodingKey,
    dec: DecodingKey,
}

impl JwtKeys {
    /// Keys from the configured secret, or from the one kept in the ledger (generated and
    /// stored on first start when there is none).
    pub(crate) async fn load(engine: &Engine, configured: Option<&str>) -> EngineResult<JwtKeys> {
        let secret: Vec<u8> = match configured.filter(|s| !s.is_empty()) {
            Some(s) if s.len() < 32 => {
                return Err(EngineError::invalid(
                    "config_invalid",
                    "lastmile.jwt_secret",
                    "lastmile.jwt_secret must be at least 32 bytes",
                ));
            }
            Some(s) => s.as_bytes().to_vec(),
            None => match engine.ledger().get_record(CONFIG, "jwt_secret").await? {
                Some(v) if v.len() >= 32 => v,
                _ => {
                    let v: [u8; 32] = rand::random();
                    let mut b = WriteBatch::new();
                    b.push(WriteOp::PutRecord {
                        kind: CONFIG,
                        key: "jwt_secret".into(),
                        value: v.to_vec(),
                    });
                    engine.ledger().submit(b).await?;
                    v.to_vec()
                }
            },
        };
        Ok(JwtKeys {
            enc: EncodingKey::from_secret(&secret),
            dec: DecodingKey::from_secret(&secret),
        })
    }
}

fn normalize_email(e: &str) -> EngineResult<String> {
    let e = e.trim().to_lowercase();
    let ok = e.len() <= MAX_EMAIL_LEN
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        })
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(EngineError::invalid(
            "parameter_invalid",
            "email",
            "email must be an address like name@example.com",
        ));
    }
    Ok(e)
}

fn bad_credentials() -> EngineError {
    EngineError::Unauthenticated {
        code: "invalid_credentials",
        message: "email or password is wrong".into(),
    }
}

fn bad_token(why: &str) -> EngineError {
    EngineError::Unauthenticated {
        code: "token_invalid",
        message: format!("{why}; log in again with POST /api/auth/login"),
    }
}

fn internal(e: impl fmt::Display) -> EngineError {
    EngineError::Internal(e.to_string())
}

async fn hash_password(password: String) -> EngineResult<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(internal)
    })
    .await
    .map_err(internal)?
}

async fn verify_password(password: String, phc: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&phc)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// A hash to verify against when the email is unknown, so both paths cost the same.
fn dummy_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        Argon2::default()
            .hash_password(b"not a password of anyone", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

impl LastMile {
    /// Registers a user and returns a token for it. An anonymous caller may only create a
    /// merchant user, who gets a new merchant; operators may create any role and attach merchant
    /// users and drivers to an existing merchant.
    pub async fn register(
        &self,
        req: RegisterRequest,
        by: Registrar,
    ) -> EngineResult<TokenResponse> {
        let role: Role = req.role.as_deref().unwrap_or("merchant").parse()?;
        let (email, name) = check_registration(&req, role, by)?;
        let existing_merchant = match req.merchant_id.as_deref() {
            Some(m) => {
                let id = MerchantId::parse(m).map_err(|_| EngineError::not_found("merchant", m))?;
                Some(self.merchant(id).await?)
            }
            None => None,
        };
        let company = req
            .company_name
            .as_deref()
            .unwrap_or(&name)
            .trim()
            .to_string();
        let hash = hash_password(req.password).await?;
        // The email is reserved (on every node) from the check until the commit, so two
        // requests cannot both pass it.
        let keys = self
            .reserve_unique(vec![format!("lm:uniq:email:{email}")])
            .await?;
        let new_user = NewUser {
            email,
            name,
            role,
            password_hash: hash,
        };
        let out = self
            .register_reserved(new_user, existing_merchant, &company)
            .await;
        keys.release(self).await;
        let (user, merchant) = out?;
        let mut view = user.view();
        view.merchant_name = merchant.map(|m| m.name);
        self.issue(&user, view)
    }

    /// Stores a new user (and, for a merchant user without one, a new engine merchant) while
    /// its email is reserved; 409 when the email is taken.
    async fn register_reserved(
        &self,
        u: NewUser,
        existing_merchant: Option<LastMileMerchant>,
        company: &str,
    ) -> EngineResult<(User, Option<LastMileMerchant>)> {
        let ledger = self.engine.ledger();
        if ledger.get_record(USER_EMAIL, &u.email).await?.is_some() {
            return Err(EngineError::Conflict {
                code: "email_taken",
                message: "an account with this email exists; log in instead".into(),
            });
        }
        let now = self.engine.clock().now();
        let mut batch = WriteBatch::new();
        let merchant = match (u.role, existing_merchant) {
            (_, Some(m)) => Some(m),
            (Role::Merchant, None) => {
                let creds = ipay_engine::engine::create_merchant(
                    ledger.as_ref(),
                    self.engine.clock().as_ref(),
                    company,
                )
                .await?;
                self.golive_retire_unshown_keys(
                    creds.merchant_id,
                    [(creds.test_key_id, false), (creds.live_key_id, true)],
                )
                .await?;
                let m = LastMileMerchant {
                    id: creds.merchant_id,
                    name: creds.name,
                    created: now,
                };
                batch.push(WriteOp::PutRecord {
                    kind: MERCHANT,
                    key: m.id.to_string(),
                    value: serde_json::to_vec(&m).map_err(internal)?,
                });
                Some(m)
            }
            _ => None,
        };
        let user = User {
            id: UserId::new_at(now.ms()),
            email: u.email.clone(),
            name: u.name,
            role: u.role,
            merchant_id: merchant.as_ref().map(|m| m.id),
            password_hash: u.password_hash,
            created: now,
        };
        batch.push(WriteOp::PutRecord {
            kind: USER,
            key: user.id.to_string(),
            value: serde_json::to_vec(&user).map_err(internal)?,
        });
        batch.push(WriteOp::PutRecord {
            kind: USER_EMAIL,
            key: u.email,
            value: user.id.to_string().into_bytes(),
        });
        batch.push(WriteOp::PutEntry {
            index: USERS_BY_ROLE,
            partition: user.role.as_str().to_string(),
            sort: user.id.to_string(),
            value: serde_json::to_vec(&user.view()).map_err(internal)?,
        });
        ledger.submit(batch).await?;
        Ok((user, merchant))
    }

    /// Users of one role, oldest first, at most `limit` (the operator desk's driver list).
    /// Accounts registered before this index existed are not listed.
    pub async fn list_users_by_role(
        &self,
        role: Role,
        limit: usize,
    ) -> EngineResult<Vec<UserView>> {
        let rows = self
            .engine
            .ledger()
            .scan_entries(USERS_BY_ROLE, role.as_str(), &EntryRange::all(limit))
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice::<UserView>(&v).ok())
            .collect())
    }

    /// Checks an email and password and returns a fresh token.
    pub async fn login(&self, req: LoginRequest) -> EngineResult<TokenResponse> {
        let email = req.email.trim().to_lowercase();
        let user = match self.engine.ledger().get_record(USER_EMAIL, &email).await? {
            Some(id) => {
                let id = UserId::parse(&String::from_utf8_lossy(&id))
                    .map_err(|_| EngineError::Internal("corrupt user index entry".into()))?;
                self.user(id).await.ok()
            }
            None => None,
        };
        let phc = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| dummy_hash().to_string());
        let ok = verify_password(req.password, phc).await;
        match user {
            Some(u) if ok => {
                let view = self.user_view(&u).await?;
                self.issue(&u, view)
            }
            _ => Err(bad_credentials()),
        }
    }

    /// Verifies an account token (signature, issuer, audience, expiry).
    pub fn verify_token(&self, token: &str) -> EngineResult<Principal> {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[ISSUER]);
        v.leeway = 0;
        let data = jsonwebtoken::decode::<Claims>(token, &self.jwt.dec, &v).map_err(|e| match e
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => bad_token("token expired"),
            _ => bad_token("token is not valid"),
        })?;
        // `exp` is checked against the system clock by the library; check the engine clock too.
        if data.claims.exp <= self.engine.clock().now().ms() / 1000 {
            return Err(bad_token("token expired"));
        }
        let user_id =
            UserId::parse(&data.claims.sub).map_err(|_| bad_token("token is not valid"))?;
        let merchant_id = match data.claims.mid {
            Some(m) => Some(MerchantId::parse(&m).map_err(|_| bad_token("token is not valid"))?),
            None => None,
        };
        Ok(Principal {
            user_id,
            role: data.claims.role,
            merchant_id,
        })
    }

    /// A user by id.
    pub async fn user(&self, id: UserId) -> EngineResult<User> {
        let raw = self
            .engine
            .ledger()
            .get_record(USER, &id.to_string())
            .await?
            .ok_or_else(|| EngineError::not_found("user", id))?;
        serde_json::from_slice(&raw).map_err(internal)
    }

    /// The view of a user, with its merchant's name.
    pub async fn user_view(&self, user: &User) -> EngineResult<UserView> {
        let mut view = user.view();
        if let Some(m) = user.merchant_id {
            view.merchant_name = self.merchant(m).await.ok().map(|m| m.name);
        }
        Ok(view)
    }

    /// A last-mile merchant by id.
    pub async fn merchant(&self, id: MerchantId) -> EngineResult<LastMileMerchant> {
        let raw = self
            .engine
            .ledger()
            .get_record(MERCHANT, &id.to_string())
            .await?
            .ok_or_else(|| EngineError::not_found("merchant", id))?;
        serde_json::from_slice(&raw).map_err(internal)
    }

    fn issue(&self, user: &User, view: UserView) -> EngineResult<TokenResponse> {
        let now = self.engine.clock().now().ms() / 1000;
        let claims = Claims {
            sub: user.id.to_string(),
            role: user.role,
            mid: user.merchant_id.map(|m| m.to_string()),
            iss: ISSUER.into(),
            aud: ISSUER.into(),
            iat: now,
            exp: now + self.cfg.token_ttl_secs,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.jwt.enc)
            .map_err(internal)?;
        Ok(TokenResponse {
            token,
            token_type: "bearer",
            expires_in: self.cfg.token_ttl_secs,
            user: view,
        })
    }
}

/// A registration's checked fields, ready to store.
struct NewUser {
    email: String,
    name: String,
    role: Role,
    password_hash: String,
}

/// Checks who may register whom and the fields' shapes; the normalised email and the name.
fn check_registration(
    req: &RegisterRequest,
    role: Role,
    by: Registrar,
) -> EngineResult<(String, String)> {
    if role != Role::Merchant && by != Registrar::Operator {
        return Err(EngineError::Forbidden {
            code: "operator_required",
            message: format!(
                "registering a {} needs an operator token (or the admin token)",
                role.as_str()
            ),
        });
    }
    if req.merchant_id.is_some() && by != Registrar::Operator {
        return Err(EngineError::Forbidden {
            code: "operator_required",
            message: "only an operator may attach a user to an existing merchant".into(),
        });
    }
    let email = normalize_email(&req.email)?;
    let name = req.name.trim().to_string();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
        return Err(EngineError::invalid(
            "parameter_invalid",
            "name",
            "name must be 1 to 200 characters",
        ));
    }
    let plen = req.password.chars().count();
    if !(MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&plen) {
        return Err(EngineError::invalid(
            "password_too_weak",
            "password",
            format!("password must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters"),
        ));
    }
    Ok((email, name))
}
